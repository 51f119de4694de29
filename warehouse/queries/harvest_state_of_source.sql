-- The state of every key of one source, keyed as image ids: $1 source.
SELECT key AS image_id, status FROM harvest_state WHERE source = $1
