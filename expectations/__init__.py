"""Great Expectations suites over the warehouse, as code: one module per table, plus the runner.

Importing this package is cheap: Great Expectations (slow to import) is loaded only by the suite
modules and when the runner evaluates a suite, never by `expectations.gate`, which reads stored
results with plain SQL, nor by `expectations.reuse`, which finds the outcomes that still hold.
"""

# Every suite, in the order they run. `text_scores` and `models` are skipped while their table is empty.
SUITE_NAMES: tuple[str, ...] = ("classes", "images", "class_texts", "image_texts", "text_scores", "models")

# What training reads, so what its gate asks for (see expectations.gate.check_gate).
TRAINING_SUITES: tuple[str, ...] = ("classes", "images", "class_texts", "image_texts")
