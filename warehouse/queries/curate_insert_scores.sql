-- Append a batch of scores (Arrow relation new_scores); a (text_id, model_id) already scored is skipped.
INSERT INTO text_scores (text_id, model_id, p_true, true_rank, pred_wnid, pred_p, kept, policy, scored_at, run_id)
SELECT n.text_id, n.model_id, n.p_true, n.true_rank, n.pred_wnid, n.pred_p, n.kept, n.policy, now(), n.run_id
FROM (SELECT DISTINCT ON (text_id, model_id) * FROM new_scores) n
ANTI JOIN text_scores s ON s.text_id = n.text_id AND s.model_id = n.model_id
