-- Class descriptions, one row per (wnid, source, text).
SELECT wnid, source, text, any_value(url) AS url
FROM class_texts
WHERE text IS NOT NULL
GROUP BY wnid, source, text
ORDER BY wnid, source, text
