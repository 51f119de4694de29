"""The fan-out: one work function over many shards, on a process pool or a Dask task runner.

Modules: `shards` (`run_shards`, the one fan-out, with the worker count and the in-process probe of a
shard; it never imports Prefect, so neither does the CLI that imports it) and `shard_tasks` (the
Prefect tasks `run_shards` submits to a Dask runner: ingest, embedded metadata and scoring shards).
"""
