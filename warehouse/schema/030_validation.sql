-- Validation (issue 4): the outcome of the latest validation of each suite. Idempotent.
-- A suite's latest validation is the run that validated it last; `imtext validate --suite X`
-- replaces only X's. The training gate (expectations/gate.py) reads this view.
CREATE OR REPLACE VIEW validation_latest AS
SELECT v.*
FROM validation_results v
JOIN (
    SELECT suite, arg_max(run_id, validated_at) AS run_id
    FROM validation_results
    GROUP BY suite
) l ON l.suite = v.suite AND l.run_id = v.run_id;
