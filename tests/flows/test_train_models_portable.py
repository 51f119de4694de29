"""What `imtext train` leaves in `$IMTEXT_HOME/models/` works outside imtext: a card in every folder, and
the transformer loads with plain transformers and predicts what imtext predicts."""

from __future__ import annotations

from pathlib import Path

from tests.flows.test_train import QUICK, seeded  # noqa: F401 - fixture
from tests.unit.test_classifier import one_torch_thread  # noqa: F401 - autouse fixture
from tests.unit.test_model_portability import PROBES, imtext_predictions, load_outside_imtext


def test_every_trained_model_has_a_card_and_the_transformer_loads_without_imtext(seeded, tmp_path):  # noqa: F811
    from flows.train import train_flow

    summary = train_flow(**QUICK)
    rows = seeded.reader().execute("SELECT model_id, fold, params ->> 'kind', path FROM models").fetchall()
    assert len(rows) == len(summary["models"]) and {r[2] for r in rows} >= {"transformer", "baseline"}
    for model_id, fold, _kind, path in rows:
        card = (Path(path) / "README.md").read_text()
        assert f"# {model_id}\n" in card and "## How to load" in card, model_id
        assert ("Trained on every fold" in card) == (fold < 0), model_id
    folder = next(Path(p) for _, fold, kind, p in rows if kind == "transformer" and fold < 0)
    outside = load_outside_imtext(folder, PROBES, tmp_path / "elsewhere")
    expected = imtext_predictions(folder, PROBES)
    assert outside["auto"] == outside["pipeline"] == expected
    assert outside["imtext_modules"] == [] and outside["card_code"] == "ran"
