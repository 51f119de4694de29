-- key: (run_id, image_id). The cross-fitting fold of every image a training run learned from
-- (issue 12): images joined by a twin description share a group and so a fold. Curation reads it to
-- judge each text with the model that never saw the text nor its twins.
CREATE TABLE IF NOT EXISTS training_folds (
    run_id VARCHAR,
    image_id VARCHAR,
    group_key VARCHAR,
    fold INTEGER,
    created_at TIMESTAMPTZ
);
