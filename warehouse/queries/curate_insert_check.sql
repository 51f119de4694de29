-- Record one curation check (Arrow relation check_row), once per run_id.
INSERT INTO curation_checks
SELECT c.run_id, c.snapshot, c.definition, c.source, c.outcome_run, c.summary, c.recorded_at
FROM check_row c
ANTI JOIN curation_checks k ON k.run_id = c.run_id
