-- The classes that have ingested images, with their image counts.
SELECT c.class_index, c.wnid, c.name, count(i.image_id) AS images
FROM classes c
JOIN images i ON i.wnid = c.wnid
GROUP BY ALL
ORDER BY c.class_index
