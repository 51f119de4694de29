-- Older rows of the archives this run ingested again.
DELETE FROM ingested_archives WHERE path IN (SELECT path FROM staged_archives)
