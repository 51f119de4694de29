"""The demo end to end on a small sample: every stage runs and the filter beats a stated floor."""

from __future__ import annotations

import pytest

# The sample knows which texts are relevant; the default policy must find them this well.
DROP_PRECISION_FLOOR = 0.85
DROP_RECALL_FLOOR = 0.85
KEEP_PRECISION_FLOOR = 0.85


@pytest.mark.slow
def test_demo_runs_end_to_end_and_filters_above_the_floor(home):
    from flows.demo.run import print_summary, run_demo

    summary = run_demo(train_per_class=8, val_per_class=2, epochs=2, max_steps=40, export_format="parquet")
    curate = summary["curate"]
    assert curate["kept"] > 0 and curate["dropped"] > 0
    assert curate["precision"] >= DROP_PRECISION_FLOOR
    assert curate["recall"] >= DROP_RECALL_FLOOR
    assert curate["keep_precision"] >= KEEP_PRECISION_FLOOR
    assert summary["validate"]["success"]
    assert (home / "exports" / "parquet" / "manifest.json").exists()

    lines: list[str] = []
    print_summary(summary, echo=lines.append)
    text = "\n".join(lines)
    assert "precision" in text and "imtext sql" in text
