-- Snapshots that maintenance may expire: older than $cutoff, not the latest, and named by no
-- model, training run, curation or export (those stay readable AT (VERSION => n) for good).
WITH kept AS (
    SELECT snapshot FROM models WHERE snapshot IS NOT NULL
    UNION SELECT snapshot FROM training_runs WHERE snapshot IS NOT NULL
    UNION SELECT snapshot FROM curation_runs WHERE snapshot IS NOT NULL
    UNION SELECT snapshot FROM exports WHERE snapshot IS NOT NULL
)
SELECT s.snapshot_id
FROM ducklake_snapshots($catalog) s
WHERE s.snapshot_time < $cutoff
  AND s.snapshot_id < (SELECT max(snapshot_id) FROM ducklake_snapshots($catalog))
  AND s.snapshot_id NOT IN (SELECT snapshot FROM kept)
ORDER BY s.snapshot_id
