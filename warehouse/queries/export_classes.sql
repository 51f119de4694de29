-- The ImageNet-1k classes in the standard index order (the export's label names).
SELECT class_index, wnid, name FROM classes ORDER BY class_index
