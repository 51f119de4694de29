-- Trained models, oldest first (a later row of the same model_id wins).
SELECT model_id, base_model, fold, folds, snapshot, params, metrics, path, created_at, run_id
FROM models
WHERE model_id IS NOT NULL AND fold IS NOT NULL
ORDER BY created_at NULLS FIRST, model_id
