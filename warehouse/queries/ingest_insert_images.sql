-- New images (anti-join on the natural key image_id, so a re-run never duplicates a row).
-- $1: source, $2: run_id
INSERT INTO images (image_id, wnid, split, path, bytes, mtime, width, height, format, mode, sha256,
                    source, ingested_at, run_id)
SELECT s.image_id, s.wnid, s.split, s.path, s.bytes, s.mtime, s.width, s.height, s.format, s.mode,
       s.sha256, $1, now(), $2
FROM staged_images s
ANTI JOIN images i ON i.image_id = s.image_id
