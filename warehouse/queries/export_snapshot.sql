-- The warehouse snapshot an export reads (run inside its read transaction, so every read sees it).
SELECT id FROM current_snapshot()
