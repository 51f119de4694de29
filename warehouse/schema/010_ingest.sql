-- Image ingestion (flows/ingest.py). Idempotent: every statement may run again.

-- Size and mtime of a quarantined file, so a re-run skips it while it is unchanged and tries it
-- again once it changes.
ALTER TABLE quarantine ADD COLUMN IF NOT EXISTS bytes BIGINT;
ALTER TABLE quarantine ADD COLUMN IF NOT EXISTS mtime DOUBLE;

-- key: path. One row per archive or parquet shard ingested whole; a re-run skips one whose size and
-- mtime are unchanged without reading it.
CREATE TABLE IF NOT EXISTS ingested_archives (
    path VARCHAR,
    kind VARCHAR,
    split VARCHAR,
    bytes BIGINT,
    mtime DOUBLE,
    images BIGINT,
    quarantined BIGINT,
    source VARCHAR,
    ingested_at TIMESTAMPTZ,
    run_id VARCHAR
);
