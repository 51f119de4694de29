-- Record one export (Arrow relation export_row), once per run_id.
INSERT INTO exports
SELECT e.run_id, e.format, e.out, e.snapshot, e.curation_run, e.images, e.texts, e.manifest, e.exported_at
FROM export_row e
ANTI JOIN exports x ON x.run_id = e.run_id
