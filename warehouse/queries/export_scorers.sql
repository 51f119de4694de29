-- The scorers of the latest finished curation, with their base model and held-out metrics where
-- registered (an ensemble is in `ensembles`, with its members, instead of `models`).
WITH latest AS (
    SELECT run_id FROM curation_runs ORDER BY finished_at DESC, run_id DESC LIMIT 1
)
SELECT DISTINCT ON (cm.model_id)
    cm.model_id, cm.kind, cm.fold, cm.role, cm.texts,
    m.base_model, m.snapshot, m.metrics, e.members
FROM curation_models cm
JOIN latest l ON l.run_id = cm.run_id
LEFT JOIN models m ON m.model_id = cm.model_id
LEFT JOIN ensembles e ON e.model_id = cm.model_id
ORDER BY cm.model_id, m.created_at DESC NULLS LAST
