-- Add class texts not stored yet. Natural key: (wnid, source, text). Returns the rows added.
INSERT INTO class_texts (text_id, wnid, source, field, text, url, fetched_at, run_id)
SELECT b.text_id, b.wnid, b.source, b.field, b.text, b.url, b.fetched_at, b.run_id
FROM harvest_class_batch b
WHERE NOT EXISTS (
    SELECT 1 FROM class_texts c WHERE c.wnid = b.wnid AND c.source = b.source AND c.text = b.text
);
