-- Frame of the `images` suite at snapshot $snapshot. duplicate_* hold the key when another row has
-- it, unknown_wnid a wnid missing from `classes`, sha256_in_other_class a hash that other rows file
-- under another wnid; all NULL when the row is fine. The offending keys are found by GROUP BY
-- (small results, usually empty) and joined back: cheaper than one window sort per rule.
WITH i AS (
    SELECT image_id, wnid, split, path, width, height, sha256 FROM images AT (VERSION => $snapshot)
),
c AS (SELECT DISTINCT wnid FROM classes AT (VERSION => $snapshot)),
dup_id AS (SELECT image_id FROM i GROUP BY image_id HAVING count(*) > 1),
dup_path AS (SELECT path FROM i GROUP BY path HAVING count(*) > 1),
multi_class AS (SELECT sha256 FROM i GROUP BY sha256 HAVING min(wnid) <> max(wnid))
SELECT
    i.image_id,
    i.wnid,
    i.split,
    i.width,
    i.height,
    i.sha256,
    i.path,
    CASE WHEN d.image_id IS NOT NULL THEN i.image_id END AS duplicate_image_id,
    CASE WHEN p.path IS NOT NULL THEN i.path END AS duplicate_path,
    CASE WHEN c.wnid IS NULL THEN i.wnid END AS unknown_wnid,
    CASE WHEN m.sha256 IS NOT NULL THEN i.sha256 END AS sha256_in_other_class
FROM i
LEFT JOIN c ON c.wnid = i.wnid
LEFT JOIN dup_id d ON d.image_id = i.image_id
LEFT JOIN dup_path p ON p.path = i.path
LEFT JOIN multi_class m ON m.sha256 = i.sha256
