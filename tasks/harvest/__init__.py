"""Harvesting texts: class descriptions and per-image texts, resumable through `harvest_state`.

Modules: `http` (the one HTTP client: rate limits, retries, redaction of secrets), `descriptions`
(WordNet glosses and lemmas, user description files), `wikipedia` (class summaries), `captions`
(the ImageNet-Captions import), `flickr` (the Flickr API and its URL lists), `metadata` (the
embedded-metadata harvest of ingested images), `embedded` (the extraction itself: EXIF, IPTC, XMP and
JPEG comments, also run by the fan-out's shard task) and `text` (cleaning, junk marks, stable text ids
and the batched writes of texts and `harvest_state`). Each source module holds the thin Prefect tasks
the harvest flows call and the bookkeeping that picks what a run fetches: keys already `done` or
`gone` are never fetched again, and the rest are registered `pending` first.
"""
