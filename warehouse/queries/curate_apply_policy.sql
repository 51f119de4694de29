-- Store the keep/drop decision of the current policy and the reason of each drop (Arrow relation
-- decisions: text_id, model_id, kept, reason) on the score rows; rows already holding this
-- decision, reason and policy are left alone.
UPDATE text_scores AS s
SET kept = d.kept, reason = d.reason, policy = $policy
FROM decisions AS d
WHERE s.text_id = d.text_id
  AND s.model_id = d.model_id
  AND (s.kept IS DISTINCT FROM d.kept OR s.reason IS DISTINCT FROM d.reason OR s.policy IS DISTINCT FROM $policy)
