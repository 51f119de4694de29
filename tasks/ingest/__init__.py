"""Ingesting ImageNet images from folders, ILSVRC tars and Hugging Face parquet shards into `images`.

Modules: `layout` (the holders every step passes on: source, listing, plan; val labels), `folders`
(class and val folders, listed on a process pool), `archives` (tars and parquet shards, scanned
without unpacking), `tar` (the tar header walker), `imageio` (probing image bytes and reading any
image path), `load` (probed records into `images` and `quarantine`) and `images` (the ingest tasks
the flow runs, in order: locate, list, plan, probe and load).
"""
