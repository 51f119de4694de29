-- Keys per source and status, for the sources in a list: $1 list of sources.
SELECT source, status, count(*) FROM harvest_state WHERE list_contains($1, source) GROUP BY ALL ORDER BY ALL
