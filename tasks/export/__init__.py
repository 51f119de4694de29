"""Write the curated dataset as Parquet, a Hugging Face `DatasetDict` folder or WebDataset shards.

One sample per image: its bytes, its label (the ImageNet-1k class index), wnid and class name, the
image texts the latest curation kept (best first), the class descriptions, and one caption (the best
kept text, else "a photo of a <class name>", said in `caption_source`). Everything is read inside one
read transaction, so an export is one warehouse snapshot, named in `manifest.json` and the dataset
card `README.md` with the curation's scorer, models and policy: enough to rebuild the dataset exactly.

Splits are `train` and `validation` (the warehouse's `val`, named as Hugging Face names it); within a
split the samples are in a shuffled order fixed by a recorded seed, the same order in every format.

The export is written into a temporary folder beside `--out` and swapped into place with renames at
the end, so a failed export leaves the previous one untouched. Only a folder an earlier imtext export
wrote (its manifest says so and it holds nothing the manifest does not list) is ever replaced, and
it is kept as it is when it has the same format and options, its files are all there and no table
the export reads changed since the snapshot its manifest names (`--force` writes it again).

Modules: `options` (formats, splits and the shard bounds of a run), `read` (the curated rows at one
snapshot), `samples` (the sample schema and the samples of a split, in order), `shards` (tar and
Parquet shard files bounded by count and size, hashed as written), `formats` (the Parquet,
WebDataset and Hugging Face writers), `card` (the dataset card) and `target` (the target folder, the
manifest and the swap into place, and the export's Prefect task).
"""
