-- Register keys to fetch as `pending`, only those with no state yet. Natural key: (key, source).
INSERT INTO harvest_state (key, source, status, attempts, last_error, updated_at, run_id)
SELECT b.key, b.source, b.status, 0, b.last_error, now(), b.run_id
FROM harvest_state_batch b
WHERE NOT EXISTS (SELECT 1 FROM harvest_state s WHERE s.key = b.key AND s.source = b.source);
