-- Curation checks (issue 16): one row per finished `imtext curate`. `snapshot` is the snapshot its
-- outcome was found to hold at, `definition` the fingerprint of what decides it (options, models and
-- their files, code), and `outcome_run` the curation_runs row whose decisions stand: this run's own
-- (source 'curated') or an earlier one's, kept because nothing curate reads changed since
-- (source 'reused'; no new scores, decisions or curation_runs row). `summary` is that outcome's
-- summary (JSON). Export reads nothing of this table, so recording a reuse leaves an export as it is.
-- Idempotent.
CREATE TABLE IF NOT EXISTS curation_checks (
    run_id VARCHAR,
    snapshot BIGINT,
    definition VARCHAR,
    source VARCHAR,
    outcome_run VARCHAR,
    summary VARCHAR,
    recorded_at TIMESTAMPTZ
);
