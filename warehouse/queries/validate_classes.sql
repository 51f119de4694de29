-- Frame of the `classes` suite at snapshot $snapshot. duplicate_* hold the key when another row
-- has it (NULL otherwise); class_texts counts the class's descriptions.
WITH c AS (
    SELECT class_index, wnid, name, gloss FROM classes AT (VERSION => $snapshot)
),
texts AS (SELECT wnid, count(*) AS n FROM class_texts AT (VERSION => $snapshot) GROUP BY wnid),
dup_index AS (SELECT class_index FROM c GROUP BY class_index HAVING count(*) > 1),
dup_wnid AS (SELECT wnid FROM c GROUP BY wnid HAVING count(*) > 1)
SELECT
    c.class_index,
    c.wnid,
    c.name,
    c.gloss,
    CASE WHEN di.class_index IS NOT NULL THEN c.class_index END AS duplicate_class_index,
    CASE WHEN dw.wnid IS NOT NULL THEN c.wnid END AS duplicate_wnid,
    coalesce(texts.n, 0) AS class_texts
FROM c
LEFT JOIN texts ON texts.wnid = c.wnid
LEFT JOIN dup_index di ON di.class_index = c.class_index
LEFT JOIN dup_wnid dw ON dw.wnid = c.wnid
ORDER BY c.class_index
