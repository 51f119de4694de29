-- Images whose file changed at the same path since they were ingested: the row follows the file.
-- $1: source, $2: run_id
UPDATE images SET
    wnid = s.wnid, split = s.split, bytes = s.bytes, mtime = s.mtime, width = s.width,
    height = s.height, format = s.format, mode = s.mode, sha256 = s.sha256,
    source = $1, ingested_at = now(), run_id = $2
FROM staged_images s
WHERE images.image_id = s.image_id AND images.path = s.path
