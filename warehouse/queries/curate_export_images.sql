-- Every image with its class, one row per image_id.
SELECT DISTINCT ON (i.image_id)
    i.image_id, i.wnid, c.class_index, c.name AS class_name, i.split, i.path, i.width, i.height
FROM images i
JOIN classes c ON c.wnid = i.wnid
ORDER BY i.image_id, i.ingested_at DESC
