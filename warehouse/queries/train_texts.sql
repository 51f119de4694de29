-- Training texts read at one snapshot ($snapshot): image texts labelled with their image's class
-- (junk-marked texts are left out: they are noise labels by construction), and class texts
-- (WordNet glosses, Wikipedia summaries, description files) as extra examples.
WITH imgs AS (
    SELECT image_id, any_value(wnid) AS wnid
    FROM images AT (VERSION => $snapshot)
    WHERE wnid IS NOT NULL
    GROUP BY image_id
),
known AS (
    SELECT wnid FROM classes AT (VERSION => $snapshot)
),
itexts AS (
    SELECT text_id, image_id, source, field, text, junk FROM image_texts AT (VERSION => $snapshot)
),
ctexts AS (
    SELECT text_id, wnid, source, text FROM class_texts AT (VERSION => $snapshot)
)
SELECT t.text_id, t.text, i.wnid, t.image_id, t.source, t.field, 'image' AS origin
FROM itexts t
JOIN imgs i ON i.image_id = t.image_id
JOIN known k ON k.wnid = i.wnid
WHERE t.text IS NOT NULL AND trim(t.text) <> '' AND coalesce(t.junk, '') = ''
UNION ALL
SELECT coalesce(c.text_id, 'class:' || md5(c.wnid || '|' || c.source || '|' || c.text)) AS text_id,
       c.text, c.wnid, NULL AS image_id, c.source, 'class' AS field, 'class' AS origin
FROM ctexts c
JOIN known k ON k.wnid = c.wnid
WHERE c.text IS NOT NULL AND trim(c.text) <> ''
ORDER BY origin DESC, text_id
