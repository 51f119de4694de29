-- Staged images whose image_id is already in `images` under another path: they are quarantined.
SELECT s.path, any_value(i.path) AS kept
FROM staged_images s
JOIN images i ON i.image_id = s.image_id AND i.path <> s.path
GROUP BY s.path
