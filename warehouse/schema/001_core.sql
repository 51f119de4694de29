-- Core tables of the imtext warehouse (DuckLake). Idempotent: every statement may run again.
-- DuckLake has no primary or unique keys; the natural key of each table is named in a comment
-- and writers MERGE or anti-join on it. The validation suites check it.

-- key: wnid
CREATE TABLE IF NOT EXISTS classes (
    class_index INTEGER,
    wnid VARCHAR,
    name VARCHAR,
    lemmas VARCHAR,
    gloss VARCHAR,
    source VARCHAR,
    url VARCHAR,
    loaded_at TIMESTAMPTZ,
    run_id VARCHAR
);

-- key: image_id (file stem); path is unique too
CREATE TABLE IF NOT EXISTS images (
    image_id VARCHAR,
    wnid VARCHAR,
    split VARCHAR,
    path VARCHAR,
    bytes BIGINT,
    mtime DOUBLE,
    width INTEGER,
    height INTEGER,
    format VARCHAR,
    mode VARCHAR,
    sha256 VARCHAR,
    source VARCHAR,
    ingested_at TIMESTAMPTZ,
    run_id VARCHAR
);

-- key: path (one row per rejected input file, latest reason wins)
CREATE TABLE IF NOT EXISTS quarantine (
    path VARCHAR,
    reason VARCHAR,
    detail VARCHAR,
    source VARCHAR,
    quarantined_at TIMESTAMPTZ,
    run_id VARCHAR
);

-- key: (wnid, source, text)
CREATE TABLE IF NOT EXISTS class_texts (
    text_id VARCHAR,
    wnid VARCHAR,
    source VARCHAR,
    text VARCHAR,
    url VARCHAR,
    fetched_at TIMESTAMPTZ,
    run_id VARCHAR
);

-- key: text_id = hash of (image_id, source, field, text)
CREATE TABLE IF NOT EXISTS image_texts (
    text_id VARCHAR,
    image_id VARCHAR,
    source VARCHAR,
    field VARCHAR,
    text VARCHAR,
    raw_text VARCHAR,
    junk VARCHAR,
    url VARCHAR,
    fetched_at TIMESTAMPTZ,
    run_id VARCHAR
);

-- key: (key, source)
CREATE TABLE IF NOT EXISTS harvest_state (
    key VARCHAR,
    source VARCHAR,
    status VARCHAR,
    attempts INTEGER,
    last_error VARCHAR,
    updated_at TIMESTAMPTZ,
    run_id VARCHAR
);

-- key: (run_id, suite, expectation)
CREATE TABLE IF NOT EXISTS validation_results (
    run_id VARCHAR,
    suite VARCHAR,
    expectation VARCHAR,
    blocking BOOLEAN,
    success BOOLEAN,
    unexpected_count BIGINT,
    element_count BIGINT,
    details VARCHAR,
    snapshot BIGINT,
    validated_at TIMESTAMPTZ
);

-- key: model_id
CREATE TABLE IF NOT EXISTS models (
    model_id VARCHAR,
    base_model VARCHAR,
    fold INTEGER,
    folds INTEGER,
    snapshot BIGINT,
    params VARCHAR,
    metrics VARCHAR,
    path VARCHAR,
    duration_s DOUBLE,
    device VARCHAR,
    created_at TIMESTAMPTZ,
    run_id VARCHAR
);

-- key: (text_id, model_id)
CREATE TABLE IF NOT EXISTS text_scores (
    text_id VARCHAR,
    model_id VARCHAR,
    p_true DOUBLE,
    true_rank INTEGER,
    pred_wnid VARCHAR,
    pred_p DOUBLE,
    kept BOOLEAN,
    policy VARCHAR,
    scored_at TIMESTAMPTZ,
    run_id VARCHAR
);
