-- Register trained models (frame `new_models`); model_id is the key, a re-run updates its row.
MERGE INTO models m
USING new_models s ON m.model_id = s.model_id
WHEN MATCHED THEN UPDATE SET
    base_model = s.base_model, fold = s.fold, folds = s.folds, snapshot = s.snapshot,
    params = s.params, metrics = s.metrics, path = s.path, duration_s = s.duration_s,
    device = s.device, created_at = s.created_at, run_id = s.run_id
WHEN NOT MATCHED THEN INSERT
    (model_id, base_model, fold, folds, snapshot, params, metrics, path, duration_s, device, created_at, run_id)
    VALUES (s.model_id, s.base_model, s.fold, s.folds, s.snapshot, s.params, s.metrics, s.path,
            s.duration_s, s.device, s.created_at, s.run_id)
