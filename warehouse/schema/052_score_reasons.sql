-- Why a dropped text was dropped (issue 12): 'junk', 'another class <wnid>', 'fits no class' or
-- 'below threshold' (the fixed --min-p-true / --top-k rule); NULL for kept texts.
ALTER TABLE text_scores ADD COLUMN IF NOT EXISTS reason VARCHAR;
