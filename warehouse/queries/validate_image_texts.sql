-- Frame of the `image_texts` suite at snapshot $snapshot. The text itself stays in the warehouse:
-- text_length is its length (trimmed when it starts with a space, so a blank text measures 0;
-- NULL when the text is). duplicate_* hold the key when another row has it,
-- unknown_image_id an image_id missing from `images`; NULL when the row is fine.
WITH t AS (
    SELECT text_id, image_id, source, field, text, fetched_at, run_id FROM image_texts AT (VERSION => $snapshot)
),
i AS (SELECT image_id FROM images AT (VERSION => $snapshot)),
dup_id AS (SELECT text_id FROM t GROUP BY text_id HAVING count(*) > 1),
dup_key AS (
    SELECT image_id, source, field, text FROM t GROUP BY image_id, source, field, text HAVING count(*) > 1
)
SELECT
    t.text_id,
    t.image_id,
    t.source,
    t.field,
    t.fetched_at,
    t.run_id,
    -- trim() is slow on long texts; only a text that starts with a blank can be blank
    CASE WHEN ascii(t.text) > 32 THEN length(t.text) ELSE length(trim(t.text)) END AS text_length,
    CASE WHEN d.text_id IS NOT NULL THEN t.text_id END AS duplicate_text_id,
    CASE
        WHEN k.image_id IS NOT NULL THEN concat_ws(' ', t.image_id, t.source, t.field, left(t.text, 60))
    END AS duplicate_key,
    CASE
        WHEN NOT EXISTS (SELECT 1 FROM i WHERE i.image_id = t.image_id) THEN t.image_id
    END AS unknown_image_id
FROM t
LEFT JOIN dup_id d ON d.text_id = t.text_id
LEFT JOIN dup_key k
    ON k.image_id = t.image_id AND k.source = t.source AND k.field = t.field AND k.text = t.text
