-- Archives and shards already ingested whole, with the size and mtime they had then.
SELECT path, bytes, mtime, images FROM ingested_archives
