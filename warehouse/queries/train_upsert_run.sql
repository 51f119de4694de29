-- Start or finish a training run (frame `run_row`); run_id is the key.
MERGE INTO training_runs r
USING run_row s ON r.run_id = s.run_id
WHEN MATCHED THEN UPDATE SET
    status = s.status, report_path = s.report_path, finished_at = s.finished_at, data = s.data
WHEN NOT MATCHED THEN INSERT
    (run_id, base_model, folds, seed, snapshot, data_fingerprint, params, data, status, report_path,
     started_at, finished_at)
    VALUES (s.run_id, s.base_model, s.folds, s.seed, s.snapshot, s.data_fingerprint, s.params, s.data,
            s.status, s.report_path, s.started_at, s.finished_at)
