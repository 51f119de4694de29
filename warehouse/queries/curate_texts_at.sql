-- The text ids that existed at a snapshot (the one the models were trained from).
SELECT DISTINCT text_id FROM image_texts AT (VERSION => $snapshot)
