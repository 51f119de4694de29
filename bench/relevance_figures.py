"""Gather `bench/relevance.py --json` results into the README's table and the demo's figures.

    python bench/relevance_figures.py run1.json run2.json ... [--demo flows/demo/relevance_figures.json]

Prints one markdown table (set, scorer, relevant kept, irrelevant dropped, precision of kept) with
the TF-IDF baseline of the same run beside every scorer, and writes the default scorer's figures,
with the baseline's, for `imtext demo` to print beside its own.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ORDER = ("named-10", "unnamed-10", "named-70", "unnamed-70")


def rows_of(paths: list[Path]) -> list[dict]:
    rows = []
    for path in paths:
        run = json.loads(path.read_text())
        for result in run["sets"]:
            base = result["scorers"].get("baseline", {})
            for scorer, r in result["scorers"].items():
                if "error" in r:
                    continue
                rows.append(
                    {
                        "set": result["set"],
                        "scorer": scorer,
                        "used": r.get("scorer_used"),
                        "kept_relevant": r["kept_relevant_rate"],
                        "dropped_irrelevant": r["dropped_irrelevant_rate"],
                        "precision": r["precision_kept"],
                        "baseline_kept_relevant": base.get("kept_relevant_rate"),
                        "baseline_dropped_irrelevant": base.get("dropped_irrelevant_rate"),
                        "texts": result["texts"],
                        "classes": result["classes"],
                        "max_steps": run.get("max_steps"),
                        "epochs": run.get("epochs"),
                        "load": run.get("load_average_end"),
                    }
                )
    rank = {name: i for i, name in enumerate(ORDER)}
    return sorted(rows, key=lambda r: (rank.get(r["set"], 99), r["scorer"] != "auto", r["scorer"]))


def pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, nargs="+")
    parser.add_argument("--demo", type=Path, help="write the default scorer's figures here for the demo")
    args = parser.parse_args()
    rows = rows_of(args.results)
    print(
        "| set | scorer | relevant kept | irrelevant dropped | precision of kept | TF-IDF: kept / dropped |"
    )
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['set']} ({r['classes']} classes, {r['texts']} texts) | {r['scorer']} | {pct(r['kept_relevant'])} "
            f"| {pct(r['dropped_irrelevant'])} | {pct(r['precision'])} "
            f"| {pct(r['baseline_kept_relevant'])} / {pct(r['baseline_dropped_irrelevant'])} |"
        )
    if args.demo:
        picked = [r for r in rows if r["scorer"] in ("auto", "baseline")]
        args.demo.write_text(
            json.dumps(
                {
                    "what": "CuPL descriptions, bench/relevance.py; auto = the default scorer",
                    "measured": "2 CPU cores, minilm-offline, 2 folds",
                    "rows": [
                        {k: r[k] for k in ("set", "scorer", "kept_relevant", "dropped_irrelevant")}
                        for r in picked
                    ],
                },
                indent=1,
            )
            + "\n"
        )
        print(f"\nwrote {args.demo}")


if __name__ == "__main__":
    main()
