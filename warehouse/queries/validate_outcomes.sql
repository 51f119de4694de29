-- The stored outcomes of suite $suite in run $run_id (a reused outcome is read back from here).
SELECT expectation, blocking, success, unexpected_count, element_count, details
FROM validation_results
WHERE run_id = $run_id AND suite = $suite
ORDER BY expectation
