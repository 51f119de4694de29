-- Store the keep/drop decision of the current policy (Arrow relation decisions: text_id, model_id, kept)
-- on the score rows; rows already holding this decision and policy are left alone.
UPDATE text_scores AS s
SET kept = d.kept, policy = $policy
FROM decisions AS d
WHERE s.text_id = d.text_id
  AND s.model_id = d.model_id
  AND (s.kept IS DISTINCT FROM d.kept OR s.policy IS DISTINCT FROM $policy)
