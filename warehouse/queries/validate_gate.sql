-- The latest validation of each suite in $suites, with its failed blocking expectations (one row
-- per failure; one row with expectation NULL for a suite that passed).
SELECT l.suite, l.run_id, l.snapshot, l.validated_at, f.expectation, f.unexpected_count
FROM (
    SELECT suite, any_value(run_id) AS run_id, max(snapshot) AS snapshot, max(validated_at) AS validated_at
    FROM validation_latest
    WHERE list_contains($suites, suite)
    GROUP BY suite
) l
LEFT JOIN validation_latest f ON f.suite = l.suite AND f.blocking AND NOT f.success
ORDER BY l.suite, f.expectation
