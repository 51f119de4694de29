-- Every image text with its image's class, one row per text_id.
SELECT
    t.text_id,
    any_value(t.image_id) AS image_id,
    any_value(t.source) AS source,
    any_value(t.field) AS field,
    any_value(t.text) AS text,
    max(nullif(trim(coalesce(t.junk, '')), '')) AS junk,
    any_value(i.wnid) AS wnid
FROM image_texts t
JOIN images i ON i.image_id = t.image_id
WHERE t.text_id IS NOT NULL
GROUP BY t.text_id
ORDER BY t.text_id
