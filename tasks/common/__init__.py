"""What every domain package shares and none owns.

Modules: `errors` (`InputError`: bad input, reported without a traceback), `retrying` (the retry
policy of the idempotent Prefect tasks: transient failures retry, user errors never do),
`probability` (softmax and log-softmax over class columns) and `metrics` (macro-F1 and top-1, the
same measures for training and curation).
"""
