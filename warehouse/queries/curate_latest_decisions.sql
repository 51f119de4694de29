-- The keep/drop decision of every text judged by the latest finished curation.
WITH latest AS (
    SELECT run_id FROM curation_runs ORDER BY finished_at DESC, run_id DESC LIMIT 1
)
SELECT DISTINCT ON (s.text_id) s.text_id, s.model_id, s.p_true, s.true_rank, s.kept, s.reason
FROM text_scores s
JOIN curation_models m ON m.model_id = s.model_id
JOIN latest l ON l.run_id = m.run_id
ORDER BY s.text_id, s.scored_at
