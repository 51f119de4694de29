-- Register ensembles (Arrow relation new_ensembles); the first calibration of an id is kept.
INSERT INTO ensembles
SELECT n.model_id, n.fold, n.members, n.calibration, n.training_run, n.created_at, n.run_id
FROM new_ensembles n
ANTI JOIN ensembles e ON e.model_id = n.model_id
