-- Frame of the `text_scores` suite at snapshot $snapshot. duplicate_key holds (text_id, model_id)
-- when another row has it, unknown_* a reference missing from its table; NULL when the row is fine.
WITH s AS (
    SELECT text_id, model_id, p_true, true_rank, pred_wnid, pred_p, kept
    FROM text_scores AT (VERSION => $snapshot)
),
texts AS (
    SELECT text_id FROM image_texts AT (VERSION => $snapshot)
    UNION
    SELECT text_id FROM class_texts AT (VERSION => $snapshot)
),
c AS (SELECT DISTINCT wnid FROM classes AT (VERSION => $snapshot)),
dup_key AS (SELECT text_id, model_id FROM s GROUP BY text_id, model_id HAVING count(*) > 1)
SELECT
    s.text_id,
    s.model_id,
    s.p_true,
    s.true_rank,
    s.pred_p,
    s.kept,
    CASE WHEN k.text_id IS NOT NULL THEN concat_ws(' ', s.text_id, s.model_id) END AS duplicate_key,
    CASE WHEN s.text_id IS NOT NULL AND t.text_id IS NULL THEN s.text_id END AS unknown_text_id,
    CASE WHEN s.pred_wnid IS NOT NULL AND c.wnid IS NULL THEN s.pred_wnid END AS unknown_pred_wnid
FROM s
LEFT JOIN texts t ON t.text_id = s.text_id
LEFT JOIN c ON c.wnid = s.pred_wnid
LEFT JOIN dup_key k ON k.text_id = s.text_id AND k.model_id = s.model_id
