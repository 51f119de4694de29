-- Image texts left out of training because they carry a junk mark, at one snapshot.
SELECT count(*) FROM image_texts AT (VERSION => $snapshot) WHERE coalesce(junk, '') <> ''
