-- Keys of one source whose status is in a list: $1 source, $2 list of statuses.
SELECT key, status, attempts, last_error FROM harvest_state WHERE source = $1 AND list_contains($2, status);
