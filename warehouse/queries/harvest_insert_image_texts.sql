-- Add harvested image texts not stored yet. Natural key: text_id; a text already stored for the
-- same image (case-folded, any source or field) is a duplicate too. Only the stored texts of the
-- batch's images are compared (text_id hashes the image_id, so this is exact). Returns rows added.
INSERT INTO image_texts (text_id, image_id, source, field, text, raw_text, junk, url, fetched_at, run_id)
WITH stored AS (
    SELECT t.text_id, t.image_id, lower(t.text) AS folded
    FROM image_texts t SEMI JOIN harvest_texts_batch s ON s.image_id = t.image_id
)
SELECT b.text_id, b.image_id, b.source, b.field, b.text, b.raw_text, b.junk, b.url, b.fetched_at, b.run_id
FROM harvest_texts_batch b
ANTI JOIN stored e1 ON e1.text_id = b.text_id
ANTI JOIN stored e2 ON e2.image_id = b.image_id AND e2.folded = lower(b.text);
