-- Harvesting (issue 3): which part of a class text a row is, and a progress view.
-- Idempotent: every statement may run again.

-- class_texts.field: 'gloss' | 'lemma' (wordnet), 'summary' (wikipedia), 'description' (file:<name>)
ALTER TABLE class_texts ADD COLUMN IF NOT EXISTS field VARCHAR;

-- One row per (source, status) with counts: how far each harvest is.
CREATE OR REPLACE VIEW harvest_progress AS
SELECT source, status, count(*) AS keys, sum(attempts) AS attempts, max(updated_at) AS updated_at
FROM harvest_state
GROUP BY source, status;
