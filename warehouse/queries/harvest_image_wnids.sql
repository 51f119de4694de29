-- Every ingested image with its class, to match imported caption records against.
SELECT image_id, wnid AS image_wnid FROM images
