-- Stored calibrations of the given ensembles.
SELECT model_id, any_value(calibration) FROM ensembles WHERE list_contains($ids, model_id) GROUP BY model_id
