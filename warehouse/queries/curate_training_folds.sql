-- The fold of every image of one training run ($run); empty for runs trained before folds were stored.
SELECT image_id, fold FROM training_folds WHERE run_id = $run
