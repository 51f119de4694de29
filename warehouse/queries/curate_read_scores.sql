-- The scores of the given scorers (one row per (text_id, model_id)).
SELECT DISTINCT ON (text_id, model_id) text_id, model_id, p_true, true_rank, pred_wnid, pred_p
FROM text_scores
WHERE list_contains($ids, model_id)
ORDER BY text_id, model_id, scored_at
