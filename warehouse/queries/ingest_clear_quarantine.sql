-- Quarantine rows superseded by this run: the path is an image now, or is quarantined again anew.
DELETE FROM quarantine
WHERE path IN (SELECT path FROM staged_images UNION ALL SELECT path FROM staged_quarantine)
