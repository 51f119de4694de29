"""Choose the relative policy's two constants on the development relevance sets, and only there.

Run `bench/relevance.py --dev --keep DIR` first; this reads the out-of-fold scores each curation in
DIR stored, replays `tasks.policy.decide` over a grid of `fit_ratio` x `prior_texts`, and prints the
kept-relevant and dropped-irrelevant rates of each point per set and scorer, with the defaults of
`tasks/policy.py` marked. The evaluation sets are never read here.

    python bench/tune_policy.py /tmp/devbench
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import relevance_sets as rs  # noqa: E402

from tasks.curate.decisions import apply_policy  # noqa: E402
from tasks.policy import DEFAULT_FIT_RATIO, DEFAULT_PRIOR_TEXTS, Policy  # noqa: E402

SCORES = """
WITH latest AS (SELECT run_id FROM curation_runs ORDER BY finished_at DESC LIMIT 1)
SELECT t.image_id, i.wnid, t.junk, s.p_true, s.true_rank, s.pred_wnid, s.pred_p, m.role
FROM text_scores s
JOIN curation_models m ON m.model_id = s.model_id
JOIN latest l ON l.run_id = m.run_id
JOIN image_texts t ON t.text_id = s.text_id
JOIN images i ON i.image_id = t.image_id
QUALIFY row_number() OVER (PARTITION BY s.text_id ORDER BY s.scored_at, s.model_id) = 1
"""
FIT_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
PRIORS = (0.0, 5.0, 20.0)


def read_scores(home: Path) -> pl.DataFrame:
    os.environ["IMTEXT_HOME"] = str(home)
    from flows.settings import load_settings
    from warehouse.db import Warehouse

    con = Warehouse.from_settings(load_settings()).reader()
    try:
        return con.execute(SCORES).pl()
    finally:
        con.close()


def rates(frame: pl.DataFrame, policy: Policy) -> tuple[float, float]:
    """(kept relevant, dropped irrelevant) when curation's own `apply_policy` decides with `policy`."""
    kept = apply_policy(frame, policy)[0]["kept"].to_numpy()
    relevant = frame["relevant"].to_numpy()
    return float(kept[relevant].mean()), float((~kept[~relevant]).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", type=Path, help="the --keep folder of `bench/relevance.py --dev`")
    args = parser.parse_args()
    summary: dict[tuple[float, float], list[float]] = {}
    for set_dir in sorted(p for p in args.work.iterdir() if p.is_dir() and p.name.startswith("dev-")):
        _, rows = rs.load_set(rs.set_path(set_dir.name))
        labels = pl.DataFrame(
            {"image_id": [r["image_id"] for r in rows], "relevant": [bool(r["relevant"]) for r in rows]}
        )
        for home in sorted(set_dir.glob("curate-*")):
            frame = read_scores(home).join(labels, on="image_id", how="inner")
            if frame.is_empty():
                continue
            print(f"\n{set_dir.name} / {home.name.removeprefix('curate-')} ({frame.height} texts)")
            print("  fit_ratio " + " ".join(f"prior {p:>4g}      " for p in PRIORS))
            for ratio in FIT_RATIOS:
                cells = []
                for prior in PRIORS:
                    keep, drop = rates(frame, Policy(fit_ratio=ratio, prior_texts=prior))
                    summary.setdefault((ratio, prior), []).append(min(keep, drop))
                    mark = "*" if (ratio, prior) == (DEFAULT_FIT_RATIO, DEFAULT_PRIOR_TEXTS) else " "
                    cells.append(f"{keep:.3f}/{drop:.3f}{mark}")
                print(f"  {ratio:<9g} " + " ".join(f"{c:<15}" for c in cells))
    print("\nworst of (kept relevant, dropped irrelevant), mean over sets and scorers:")
    for (ratio, prior), values in sorted(summary.items(), key=lambda kv: -np.mean(kv[1]))[:8]:
        print(f"  fit_ratio {ratio:<4g} prior {prior:<4g} {np.mean(values):.3f}")


if __name__ == "__main__":
    main()
