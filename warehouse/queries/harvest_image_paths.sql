-- Every ingested image and where its bytes are, for the embedded-metadata harvest.
SELECT image_id, path FROM images ORDER BY image_id
