-- The latest finished curation with the scorer ids it decided with (JSON list, by fold).
WITH latest AS (
    SELECT * FROM curation_runs ORDER BY finished_at DESC, run_id DESC LIMIT 1
)
SELECT
    l.run_id, l.scorer, l.scorer_reason, l.training_run, l.policy, l.snapshot, l.finished_at,
    l.texts, l.kept, l.dropped, l.metrics,
    to_json(list(m.model_id ORDER BY m.fold, m.model_id))::VARCHAR AS model_ids
FROM latest l
JOIN curation_models m ON m.run_id = l.run_id
GROUP BY ALL
