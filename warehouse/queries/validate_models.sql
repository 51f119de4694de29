-- Frame of the `models` suite at snapshot $snapshot. duplicate_model_id holds the id when another
-- row has it; NULL when the row is fine.
WITH m AS (SELECT model_id, base_model, path, metrics FROM models AT (VERSION => $snapshot)),
dup_id AS (SELECT model_id FROM m GROUP BY model_id HAVING count(*) > 1)
SELECT
    m.model_id,
    m.base_model,
    m.path,
    m.metrics,
    CASE WHEN d.model_id IS NOT NULL THEN m.model_id END AS duplicate_model_id
FROM m
LEFT JOIN dup_id d ON d.model_id = m.model_id
