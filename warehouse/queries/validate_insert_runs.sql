-- Record which snapshot each suite of a validation run was checked at (registered as
-- validation_runs_batch). Natural key: (run_id, suite), so storing the same run again adds nothing.
INSERT INTO validation_runs
SELECT b.run_id, b.suite, b.snapshot, b.definition, b.source, b.outcome_run, b.outcome_snapshot, b.skipped,
       b.rows, b.seconds, b.validated_at, b.recorded_at
FROM validation_runs_batch b
ANTI JOIN validation_runs r ON r.run_id = b.run_id AND r.suite = b.suite
