-- Archives and shards ingested whole by this run (their older rows were deleted first).
-- $1: source, $2: run_id
INSERT INTO ingested_archives (path, kind, split, bytes, mtime, images, quarantined, source, ingested_at, run_id)
SELECT path, kind, split, bytes, mtime, images, quarantined, $1, now(), $2
FROM staged_archives
