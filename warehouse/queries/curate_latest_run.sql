-- The latest finished curation (the one the `curated` view follows) with its scorer ids, sorted.
WITH latest AS (
    SELECT run_id FROM curation_runs ORDER BY finished_at DESC, run_id DESC LIMIT 1
)
SELECT l.run_id, list(m.model_id ORDER BY m.model_id) FILTER (WHERE m.model_id IS NOT NULL) AS model_ids
FROM latest l
LEFT JOIN curation_models m ON m.run_id = l.run_id
GROUP BY l.run_id
