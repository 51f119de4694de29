-- Every class's display name and lemmas (comma-separated), for masking class names in texts.
SELECT wnid, name, lemmas FROM classes
