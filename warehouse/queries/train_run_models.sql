-- The models a training run ($run_id) registered.
SELECT model_id, base_model, fold, folds, params, metrics, path, device
FROM models
WHERE run_id = $run_id
ORDER BY model_id
