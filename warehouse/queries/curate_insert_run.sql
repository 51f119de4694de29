-- Record a finished curation (Arrow relations curation_row and curation_scorers), once per run_id.
INSERT INTO curation_models
SELECT c.run_id, c.model_id, c.kind, c.fold, c.role, c.texts
FROM curation_scorers c
ANTI JOIN curation_models m ON m.run_id = c.run_id AND m.model_id = c.model_id;

INSERT INTO curation_runs
SELECT r.run_id, r.scorer, r.scorer_reason, r.training_run, r.policy, r.snapshot, r.texts, r.kept,
       r.dropped, r.metrics, r.report_path, r.started_at, r.finished_at
FROM curation_row r
ANTI JOIN curation_runs c ON c.run_id = r.run_id
