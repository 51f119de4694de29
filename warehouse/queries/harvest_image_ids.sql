-- Every ingested image id, to keep the URL list lines of images the warehouse holds.
SELECT image_id FROM images
