-- Store the outcomes of a validation run (registered as validation_batch). Natural key:
-- (run_id, suite, expectation), so storing the same run again adds nothing. Returns the rows added.
INSERT INTO validation_results
    (run_id, suite, expectation, blocking, success, unexpected_count, element_count, details, snapshot, validated_at)
SELECT b.run_id, b.suite, b.expectation, b.blocking, b.success, b.unexpected_count, b.element_count, b.details,
       b.snapshot, b.validated_at
FROM validation_batch b
WHERE NOT EXISTS (
    SELECT 1 FROM validation_results v
    WHERE v.run_id = b.run_id AND v.suite = b.suite AND v.expectation = b.expectation
);
