-- The latest record of each suite in $suites (validation_runs): the snapshot it was checked at, the
-- definition it was checked with, and the run and snapshot its outcome is from.
SELECT suite, snapshot, definition, outcome_run, outcome_snapshot, skipped, rows, validated_at
FROM validation_runs
WHERE list_contains($suites, suite)
QUALIFY row_number() OVER (PARTITION BY suite ORDER BY recorded_at DESC, snapshot DESC) = 1
