-- The kept image texts of the latest curation.
SELECT image_id, wnid, text_id, source, field, text, p_true FROM curated
