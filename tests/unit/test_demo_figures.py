"""The demo prints, beside its own figures, those measured on real text nobody here wrote."""

from __future__ import annotations

import json


def test_demo_prints_the_real_text_figures_of_every_set():
    from flows.demo.run import RELEVANCE_FIGURES, print_relevance_figures

    figures = json.loads(RELEVANCE_FIGURES.read_text())
    lines: list[str] = []
    print_relevance_figures(lines.append)
    text = "\n".join(lines)
    assert "real descriptions nobody here wrote" in text
    for name in ("named-10", "unnamed-10", "named-70", "unnamed-70"):
        assert any(r["set"] == name and r["scorer"] == "auto" for r in figures["rows"])
        assert name in text
    unnamed = next(r for r in figures["rows"] if r["set"] == "unnamed-10" and r["scorer"] == "auto")
    assert f"{100 * unnamed['kept_relevant']:5.1f}%" in text
