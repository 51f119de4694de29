-- Frame of the `class_texts` suite at snapshot $snapshot. The text itself stays in the warehouse:
-- text_length is its length (trimmed when it starts with a space, so a blank text measures 0;
-- NULL when the text is). duplicate_* hold the key when another row has it,
-- unknown_wnid a wnid missing from `classes`; NULL when the row is fine.
WITH t AS (
    SELECT text_id, wnid, source, text, fetched_at, run_id FROM class_texts AT (VERSION => $snapshot)
),
c AS (SELECT DISTINCT wnid FROM classes AT (VERSION => $snapshot)),
dup_id AS (SELECT text_id FROM t GROUP BY text_id HAVING count(*) > 1),
dup_key AS (SELECT wnid, source, text FROM t GROUP BY wnid, source, text HAVING count(*) > 1)
SELECT
    t.text_id,
    t.wnid,
    t.source,
    t.fetched_at,
    t.run_id,
    -- trim() is slow on long texts; only a text that starts with a blank can be blank
    CASE WHEN ascii(t.text) > 32 THEN length(t.text) ELSE length(trim(t.text)) END AS text_length,
    CASE WHEN d.text_id IS NOT NULL THEN t.text_id END AS duplicate_text_id,
    CASE WHEN k.wnid IS NOT NULL THEN concat_ws(' ', t.wnid, t.source, left(t.text, 60)) END AS duplicate_key,
    CASE WHEN c.wnid IS NULL THEN t.wnid END AS unknown_wnid
FROM t
LEFT JOIN c ON c.wnid = t.wnid
LEFT JOIN dup_id d ON d.text_id = t.text_id
LEFT JOIN dup_key k ON k.wnid = t.wnid AND k.source = t.source AND k.text = t.text
