-- Add harvested image texts not stored yet. Natural key: text_id; a text already stored for the
-- same image (case-folded, any source or field) is a duplicate too. Returns the rows added.
INSERT INTO image_texts (text_id, image_id, source, field, text, raw_text, junk, url, fetched_at, run_id)
SELECT b.text_id, b.image_id, b.source, b.field, b.text, b.raw_text, b.junk, b.url, b.fetched_at, b.run_id
FROM harvest_texts_batch b
WHERE NOT EXISTS (SELECT 1 FROM image_texts t WHERE t.text_id = b.text_id)
  AND NOT EXISTS (
      SELECT 1 FROM image_texts t WHERE t.image_id = b.image_id AND lower(t.text) = lower(b.text)
  );
