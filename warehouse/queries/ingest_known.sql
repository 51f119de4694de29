-- Every image and quarantined input under a source prefix, with the size and mtime it had when it
-- was read: the incremental check of `imtext ingest` skips inputs that are unchanged.
-- $1: path prefix
SELECT path, bytes, mtime, NULL::VARCHAR AS reason FROM images WHERE starts_with(path, $1)
UNION ALL
SELECT path, bytes, mtime, reason FROM quarantine WHERE starts_with(path, $1)
