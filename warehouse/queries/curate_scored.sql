-- (text_id, model_id) pairs already scored by the given scorers.
SELECT DISTINCT text_id, model_id FROM text_scores WHERE list_contains($ids, model_id)
