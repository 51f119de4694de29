-- The curated dataset: every kept image text, as decided by the out-of-fold scorers of the latest
-- finished curation (curation_runs + curation_models). Raw texts stay in image_texts; this view
-- only applies the decisions. A text has one row even if an older assignment rule scored it twice.
CREATE OR REPLACE VIEW curated AS
WITH latest AS (
    SELECT run_id FROM curation_runs ORDER BY finished_at DESC, run_id DESC LIMIT 1
),
scorers AS (
    SELECT m.model_id FROM curation_models m JOIN latest l ON m.run_id = l.run_id
)
SELECT
    i.image_id,
    i.wnid,
    i.split,
    i.path,
    t.text_id,
    t.source,
    t.field,
    t.text,
    s.p_true,
    s.true_rank,
    s.model_id
FROM text_scores s
JOIN scorers USING (model_id)
JOIN image_texts t ON t.text_id = s.text_id
JOIN images i ON i.image_id = t.image_id
WHERE s.kept
QUALIFY row_number() OVER (PARTITION BY s.text_id ORDER BY s.scored_at, s.model_id) = 1;
