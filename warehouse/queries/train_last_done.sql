-- The most recent finished training run (the one `latest_models` serves) and what it was asked.
SELECT run_id, snapshot, base_model, folds, params, data, report_path
FROM training_runs
WHERE status = 'done'
ORDER BY finished_at DESC
LIMIT 1
