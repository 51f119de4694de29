-- Record fetch outcomes: one row per (key, source), attempts counted. Returns the rows touched.
MERGE INTO harvest_state s
USING harvest_state_batch b
ON s.key = b.key AND s.source = b.source
WHEN MATCHED THEN UPDATE SET
    status = b.status,
    attempts = coalesce(s.attempts, 0) + 1,
    last_error = b.last_error,
    updated_at = now(),
    run_id = b.run_id
WHEN NOT MATCHED THEN INSERT (key, source, status, attempts, last_error, updated_at, run_id)
    VALUES (b.key, b.source, b.status, 1, b.last_error, now(), b.run_id);
