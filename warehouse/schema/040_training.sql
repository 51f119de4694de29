-- Training runs and their curves (imtext train). Idempotent.

-- key: run_id (one row per `imtext train` run; status running -> done | failed)
CREATE TABLE IF NOT EXISTS training_runs (
    run_id VARCHAR,
    base_model VARCHAR,
    folds INTEGER,
    seed INTEGER,
    snapshot BIGINT,
    data_fingerprint VARCHAR,
    params VARCHAR,
    data VARCHAR,
    status VARCHAR,
    report_path VARCHAR,
    started_at TIMESTAMPTZ,
    finished_at TIMESTAMPTZ
);

-- key: (model_id, kind, step); kind 'train' (running training loss) or 'eval' (held-out metrics)
CREATE TABLE IF NOT EXISTS training_history (
    model_id VARCHAR,
    run_id VARCHAR,
    kind VARCHAR,
    epoch INTEGER,
    step INTEGER,
    loss DOUBLE,
    top1 DOUBLE,
    top5 DOUBLE,
    macro_f1 DOUBLE,
    learning_rate DOUBLE,
    elapsed_s DOUBLE,
    recorded_at TIMESTAMPTZ
);

-- The models of the most recent finished training run: K fold models and one on everything, per
-- kind ('transformer', 'baseline'). Curation picks its out-of-fold scorers here.
CREATE OR REPLACE VIEW latest_models AS
SELECT m.*, json_extract_string(m.params, '$.kind') AS kind
FROM models m
WHERE m.run_id = (
    SELECT run_id FROM training_runs WHERE status = 'done' ORDER BY finished_at DESC LIMIT 1
);
