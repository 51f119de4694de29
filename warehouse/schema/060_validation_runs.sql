-- Validation runs (issue 16): one row per (run_id, suite): the snapshot the suite was checked at,
-- the fingerprint of its definition, and where its outcome is: evaluated by this run
-- (source 'validated', outcome_run = run_id) or reused from an earlier run whose outcome still
-- holds because nothing the suite reads changed since (source 'reused'; its rows in
-- validation_results are under outcome_run). Idempotent.
CREATE TABLE IF NOT EXISTS validation_runs (
    run_id VARCHAR,
    suite VARCHAR,
    snapshot BIGINT,
    definition VARCHAR,
    source VARCHAR,
    outcome_run VARCHAR,
    outcome_snapshot BIGINT,
    skipped VARCHAR,
    rows BIGINT,
    seconds DOUBLE,
    validated_at TIMESTAMPTZ,
    recorded_at TIMESTAMPTZ
);
