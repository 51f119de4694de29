-- Curation bookkeeping (issue 5). Idempotent. Scores and keep/drop decisions live in text_scores
-- (core schema); these tables say which scores a curation used, with which policy, and what was
-- exported from it.

-- key: run_id. One row per finished `imtext curate`; the `curated` view follows the latest one.
CREATE TABLE IF NOT EXISTS curation_runs (
    run_id VARCHAR,
    scorer VARCHAR,
    scorer_reason VARCHAR,
    training_run VARCHAR,
    policy VARCHAR,
    snapshot BIGINT,
    texts BIGINT,
    kept BIGINT,
    dropped BIGINT,
    metrics VARCHAR,
    report_path VARCHAR,
    started_at TIMESTAMPTZ,
    finished_at TIMESTAMPTZ
);

-- key: (run_id, model_id). The scorers a curation decided with: text_scores.model_id values.
-- role: 'out-of-fold' (fold k scores the texts of fold k) or 'new-texts' (fold -1 scores texts
-- that did not exist when the models were trained).
CREATE TABLE IF NOT EXISTS curation_models (
    run_id VARCHAR,
    model_id VARCHAR,
    kind VARCHAR,
    fold INTEGER,
    role VARCHAR,
    texts BIGINT
);

-- key: model_id. An ensemble scorer: the average of its members' temperature-calibrated
-- probabilities. text_scores.model_id is a models.model_id or an ensembles.model_id.
CREATE TABLE IF NOT EXISTS ensembles (
    model_id VARCHAR,
    fold INTEGER,
    members VARCHAR,
    calibration VARCHAR,
    training_run VARCHAR,
    created_at TIMESTAMPTZ,
    run_id VARCHAR
);

-- key: run_id. One row per `imtext export`.
CREATE TABLE IF NOT EXISTS exports (
    run_id VARCHAR,
    format VARCHAR,
    out VARCHAR,
    snapshot BIGINT,
    curation_run VARCHAR,
    images BIGINT,
    texts BIGINT,
    manifest VARCHAR,
    exported_at TIMESTAMPTZ
);
