-- Class order (the standard ImageNet-1k index) at one snapshot.
SELECT wnid, class_index, name FROM classes AT (VERSION => $snapshot) ORDER BY class_index
