-- Trained models, oldest first (a later row of the same model_id wins), with their training run's status.
SELECT m.model_id, m.base_model, m.fold, m.folds, m.snapshot, m.params, m.metrics, m.path, m.created_at, m.run_id,
       r.status AS run_status
FROM models m
LEFT JOIN (
    SELECT run_id, arg_max(status, coalesce(finished_at, started_at)) AS status FROM training_runs GROUP BY run_id
) r ON r.run_id = m.run_id
WHERE m.model_id IS NOT NULL AND m.fold IS NOT NULL
ORDER BY m.created_at NULLS FIRST, m.model_id
