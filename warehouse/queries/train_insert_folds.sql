-- The folds of one training run (Arrow relation new_folds: run_id, image_id, group_key, fold);
-- an (run_id, image_id) already stored is skipped, so a resumed run adds nothing.
INSERT INTO training_folds (run_id, image_id, group_key, fold, created_at)
SELECT n.run_id, n.image_id, n.group_key, n.fold, now()
FROM (SELECT DISTINCT ON (run_id, image_id) * FROM new_folds) n
ANTI JOIN training_folds f ON f.run_id = n.run_id AND f.image_id = n.image_id
