-- Curves of one model (frame `history_rows`): replaces what an earlier attempt recorded for it.
DELETE FROM training_history WHERE model_id IN (SELECT DISTINCT model_id FROM history_rows);
INSERT INTO training_history BY NAME SELECT * FROM history_rows
