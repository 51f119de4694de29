-- Rejected inputs, one row per path (the superseded rows were deleted first).
-- $1: source, $2: run_id
INSERT INTO quarantine (path, reason, detail, source, quarantined_at, run_id, bytes, mtime)
SELECT path, reason, detail, $1, now(), $2, bytes, mtime
FROM staged_quarantine
