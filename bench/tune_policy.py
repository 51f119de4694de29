"""Choose the relative policy's two constants on the development relevance sets, and only there.

Run `bench/relevance.py --dev --keep DIR` first; this reads the out-of-fold scores each curation in
DIR stored (one per scorer), replays curation's own `apply_policy` over a grid of `fit_scale` x
`margin_power` x `prior_texts` (see tasks/curate/policy.py), and prints, per point, the kept-relevant and dropped-irrelevant rates
on every dev set against the issue's goals (0.90 / 0.90 where texts name their class, 0.80 / 0.80
where none does). Points are ranked by their worst distance to a goal over every set, the defaults of
`tasks/curate/policy.py` marked. The evaluation sets are never read here.

    python bench/tune_policy.py /tmp/devbench
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import relevance_sets as rs  # noqa: E402

from tasks.curate.decisions import apply_policy  # noqa: E402
from tasks.curate.policy import DEFAULT_FIT_SCALE, DEFAULT_MARGIN_POWER, DEFAULT_PRIOR_TEXTS, Policy  # noqa: E402

SCORES = """
WITH latest AS (SELECT run_id FROM curation_runs WHERE scorer = ? ORDER BY finished_at DESC LIMIT 1)
SELECT t.image_id, i.wnid, t.junk, s.p_true, s.true_rank, s.pred_wnid, s.pred_p, m.role
FROM text_scores s
JOIN curation_models m ON m.model_id = s.model_id
JOIN latest l ON l.run_id = m.run_id
JOIN image_texts t ON t.text_id = s.text_id
JOIN images i ON i.image_id = t.image_id
QUALIFY row_number() OVER (PARTITION BY s.text_id ORDER BY s.scored_at, s.model_id) = 1
"""
FIT_SCALES = (0.2, 0.3, 0.4, 0.45, 0.5, 0.6)
MARGIN_POWERS = (0.0, 1.0, 1.5, 2.0, 2.5)
PRIORS = (0.0, 5.0, 20.0)
DEFAULT = (DEFAULT_FIT_SCALE, DEFAULT_MARGIN_POWER, DEFAULT_PRIOR_TEXTS)


def goal(set_name: str) -> float:
    return 0.80 if "unnamed" in set_name else 0.90


def read_scores(home: Path) -> dict[str, pl.DataFrame]:
    """{scorer: scores of its latest curation} in the warehouse at `home`."""
    os.environ["IMTEXT_HOME"] = str(home)
    from flows.settings import load_settings
    from warehouse.db import Warehouse

    con = Warehouse.from_settings(load_settings()).reader()
    try:
        scorers = [
            r[0] for r in con.execute("SELECT DISTINCT scorer FROM curation_runs ORDER BY 1").fetchall()
        ]
        return {scorer: con.execute(SCORES, [scorer]).pl() for scorer in scorers}
    finally:
        con.close()


def rates(frame: pl.DataFrame, policy: Policy) -> tuple[float, float]:
    """(kept relevant, dropped irrelevant) when curation's own `apply_policy` decides with `policy`."""
    kept = apply_policy(frame, policy)[0]["kept"].to_numpy()
    relevant = frame["relevant"].to_numpy()
    return float(kept[relevant].mean()), float((~kept[~relevant]).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", type=Path, nargs="+", help="--keep folders of `bench/relevance.py --dev`")
    parser.add_argument(
        "--scorer", default="ensemble", help="the curation scorer to tune for (default: ensemble)"
    )
    parser.add_argument("--top", type=int, default=10, help="points to print")
    args = parser.parse_args()
    frames: dict[str, pl.DataFrame] = {}
    for work in args.work:
        for set_dir in sorted(p for p in work.iterdir() if p.is_dir() and p.name in rs.DEV_SETS):
            _, rows = rs.load_set(rs.set_path(set_dir.name))
            labels = pl.DataFrame(
                {"image_id": [r["image_id"] for r in rows], "relevant": [bool(r["relevant"]) for r in rows]}
            )
            scores = read_scores(set_dir / "trained").get(args.scorer)
            if scores is not None:
                frames[set_dir.name] = scores.join(labels, on="image_id", how="inner")
    if not frames:
        raise SystemExit(
            f"no dev set curated with --scorer {args.scorer} under {', '.join(map(str, args.work))}"
        )
    points = []
    for ratio in FIT_SCALES:
        for margin in MARGIN_POWERS:
            for prior in PRIORS:
                policy = Policy(fit_scale=ratio, margin_power=margin, prior_texts=prior)
                got = {name: rates(frame, policy) for name, frame in frames.items()}
                worst = min(min(k, d) - goal(name) for name, (k, d) in got.items())
                points.append((worst, (ratio, margin, prior), got))
    points.sort(key=lambda p: -p[0])
    shown = points[: args.top] + [p for p in points if p[1] == DEFAULT and p not in points[: args.top]]
    print(
        f"scorer {args.scorer}; goals: 0.90/0.90 (named), 0.80/0.80 (unnamed); kept relevant / dropped irrelevant"
    )
    print(
        f"{'worst':>6s} {'scale':>5s} {'power':>6s} {'prior':>5s}  " + "  ".join(f"{n:>15s}" for n in frames)
    )
    for worst, (ratio, margin, prior), got in shown:
        mark = "*" if (ratio, margin, prior) == DEFAULT else " "
        cells = "  ".join(f"{got[n][0]:.3f}/{got[n][1]:.3f}".rjust(15) for n in frames)
        print(f"{worst:+.3f}{mark} {ratio:5g} {margin:6g} {prior:5g}  {cells}")
    print("* the defaults of tasks/curate/policy.py; worst: the smallest rate minus its goal over every set")


if __name__ == "__main__":
    main()
