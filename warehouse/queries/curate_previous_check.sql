-- The latest curation check: the snapshot its outcome held at, its definition, and the outcome.
SELECT run_id, snapshot, definition, source, outcome_run, summary
FROM curation_checks
ORDER BY recorded_at DESC, snapshot DESC
LIMIT 1
