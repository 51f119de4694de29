-- The classes that have ingested images (what `--classes ingested` selects).
SELECT DISTINCT wnid FROM images
