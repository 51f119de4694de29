"""Benchmark: how well `imtext curate` keeps relevant image texts and drops the rest, on real text.

For each labelled set of bench/data/relevance/ (built by bench/relevance_sets.py from the CuPL
class descriptions; `named-*` texts mostly name their class, `unnamed-*` never do), in a fresh
IMTEXT_HOME: tiny JPEGs in ImageNet folder layout and an ImageNet-Captions JSON carrying each row's
text as the image's description, then through the CLI

    imtext ingest --source DIR
    imtext harvest classes --no-wikipedia
    imtext harvest images --captions FILE
    imtext train --base-model minilm-offline --folds 2 --allow-invalid
    imtext curate --scorer S          (every scorer, each on its own copy of the trained warehouse)

each followed at once by reading its decisions back with `imtext sql --format json` (the latest
curation's scorers in `curation_models`, their `text_scores`, joined to `image_texts`), matched to the
rows by image id (the text is checked too). Printed per set and scorer: kept-relevant rate (recall), dropped-irrelevant
rate (other-class and junk apart), precision of the kept texts, counts, and the TF-IDF baseline
(`--scorer baseline`, from the same training run) beside each, with the ratio of balanced accuracies
against it; the drops per `text_scores.reason` where that column exists.

All scorers curate the one trained warehouse in turn: a curation re-decides every text with its own
scorer's models and policy (scores are cached per (text, model) only) and the curated view follows
the latest run, so each run's decisions are read right after it. (A copy of the warehouse per scorer
would not open: DuckLake keeps the data path in its catalog.) With `--keep DIR`, a set whose warehouse
was trained there before is not trained again.

    .venv/bin/python bench/relevance.py [--sets named-10,unnamed-10,named-70,unnamed-70 | --dev]
        [--scorers auto,transformer,baseline,ensemble] [--base-model minilm-offline] [--epochs N]
        [--json OUT] [--keep DIR]

Only the dev sets (`--dev`) may be used to tune thresholds; the evaluation sets only measure.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

import relevance_sets as rs  # noqa: E402

IMTEXT = str(ROOT / ".venv" / "bin" / "imtext")
BASELINE = "baseline"
FALLBACK_SCORERS = ("auto", "transformer", "baseline", "ensemble")


# -- the warehouse input -----------------------------------------------------------------------


def write_source(rows: list[dict], root: Path) -> tuple[Path, Path]:
    """ImageNet folder (train/<wnid>/<image_id>.JPEG, each image distinct) and the captions JSON."""
    from PIL import Image

    images = root / "imagenet"
    for i, r in enumerate(rows):
        folder = images / "train" / r["wnid"]
        folder.mkdir(parents=True, exist_ok=True)
        # Distinct pixels per image so no two files share a checksum.
        im = Image.new("RGB", (16, 16), ((i * 37) % 256, (i // 7 * 11) % 256, (i // 256 * 53) % 256))
        im.putpixel((i % 16, (i // 16) % 16), (255 - (i % 256), i % 199, 7))
        im.save(folder / f"{r['image_id']}.JPEG", format="JPEG", quality=90)
    captions = root / "captions.json"
    records = [
        {
            "filename": f"{r['image_id']}.JPEG",
            "wnid": r["wnid"],
            "title": "",
            "description": r["text"],
            "tags": [],
        }
        for r in rows
    ]
    captions.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    return images, captions


# -- running the CLI ---------------------------------------------------------------------------


CODE = ROOT  # the source tree whose imtext runs (--code)


def cli_env(home: Path, prefect_home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IMTEXT_", "PREFECT_"))}
    # Always ahead of the editable install, whose finder points at the tree the venv was made for:
    # a copy of the bench run from a snapshot would otherwise run the live working tree.
    env["PYTHONPATH"] = str(CODE)
    env.update(
        IMTEXT_HOME=str(home),
        PREFECT_HOME=str(prefect_home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        COLUMNS="200",
    )
    return env


def run(args: list[str], env: dict, log: Path) -> tuple[float, str]:
    """Run `imtext ARGS`; (seconds, stdout). Stops the bench with the log's tail on failure."""
    started = time.perf_counter()
    done = subprocess.run([IMTEXT, *args], cwd=CODE, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    with log.open("a", encoding="utf-8") as fh:
        fh.write(f"$ imtext {' '.join(args)}  ({seconds:.1f} s, exit {done.returncode})\n")
        fh.write(done.stdout[-20000:] + done.stderr[-20000:] + "\n")
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-3000:] + done.stderr[-6000:])
        raise SystemExit(f"imtext {' '.join(args)} failed with exit code {done.returncode} (log: {log})")
    return seconds, done.stdout


def sql(query: str, env: dict, log: Path) -> list[dict]:
    _, out = run(["sql", query, "--format", "json"], env, log)
    out = out.strip()
    return json.loads(out) if out else []


def scorer_choices(env: dict) -> list[str]:
    """The --scorer choices `imtext curate --help` lists (one wide line, so nothing is wrapped)."""
    done = subprocess.run(
        [IMTEXT, "curate", "--help"], cwd=CODE, env={**env, "COLUMNS": "1000"}, capture_output=True, text=True
    )
    m = re.search(r"--scorer\s+\S*\s*<([a-z|_-]+)>", done.stdout) or re.search(
        r"--scorer\s+\[([a-z|_-]+)\]", done.stdout
    )
    return m.group(1).split("|") if m else list(FALLBACK_SCORERS)


DECISIONS = """
WITH latest AS (
    SELECT run_id, scorer, scorer_reason FROM curation_runs ORDER BY finished_at DESC, run_id DESC LIMIT 1
)
SELECT t.image_id, t.text, t.junk, s.p_true, s.true_rank, s.pred_wnid, s.kept, {reason} AS reason,
       l.scorer AS scorer_used, l.scorer_reason
FROM text_scores s
JOIN curation_models m ON m.model_id = s.model_id
JOIN latest l ON l.run_id = m.run_id
JOIN image_texts t ON t.text_id = s.text_id
QUALIFY row_number() OVER (PARTITION BY s.text_id ORDER BY s.scored_at, s.model_id) = 1
"""


def read_decisions(env: dict, log: Path) -> list[dict]:
    cols = sql(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'text_scores'", env, log
    )
    has_reason = any(c["column_name"] == "reason" for c in cols)
    return sql(DECISIONS.format(reason="s.reason" if has_reason else "NULL"), env, log)


# -- measuring ---------------------------------------------------------------------------------


def _norm(text: str | None) -> str:
    return " ".join((text or "").split())


def _rate(num: int, den: int) -> float | None:
    return num / den if den else None


def measure(rows: list[dict], decisions: list[dict]) -> dict:
    """Rates of the decisions against the labels (rows without a decision count as dropped)."""
    by_image = {d["image_id"]: d for d in decisions}
    kept = {}
    text_mismatch = missing = 0
    reasons: dict[str, int] = {}
    for r in rows:
        d = by_image.get(r["image_id"])
        if d is None:
            missing += 1
            kept[r["image_id"]] = False
            continue
        if _norm(d["text"]) != _norm(r["text"]):
            text_mismatch += 1
        kept[r["image_id"]] = bool(d["kept"])
        if not d["kept"]:
            reason = str(d.get("reason") or "-")
            reason = re.sub(r"n\d{8}", "<wnid>", reason)  # one bucket per reason, not per class
            key = f"{r['kind']}:{reason}"
            reasons[key] = reasons.get(key, 0) + 1

    def count(pred) -> tuple[int, int]:
        sel = [r for r in rows if pred(r)]
        return sum(kept[r["image_id"]] for r in sel), len(sel)

    kept_rel, n_rel = count(lambda r: r["relevant"])
    kept_irr, n_irr = count(lambda r: not r["relevant"])
    kept_other, n_other = count(lambda r: r["kind"] == "other-class")
    kept_junk, n_junk = count(lambda r: r["kind"] == "junk")
    kept_close, n_close = count(lambda r: r.get("mix") == "close")
    kept_dup, n_dup = count(lambda r: r["relevant"] and r.get("dup_group"))
    kept_rel_masked, n_rel_masked = count(lambda r: r["relevant"] and r["how"] == "masked")
    n_kept = kept_rel + kept_irr
    recall = _rate(kept_rel, n_rel)
    dropped = _rate(n_irr - kept_irr, n_irr)
    return {
        "texts": len(rows),
        "relevant": n_rel,
        "irrelevant": n_irr,
        "kept": n_kept,
        "kept_relevant": kept_rel,
        "kept_irrelevant": kept_irr,
        "kept_relevant_rate": recall,
        "dropped_irrelevant_rate": dropped,
        "dropped_other_class_rate": _rate(n_other - kept_other, n_other),
        "dropped_close_class_rate": _rate(n_close - kept_close, n_close),
        "dropped_junk_rate": _rate(n_junk - kept_junk, n_junk),
        "kept_duplicates_rate": _rate(kept_dup, n_dup),
        "kept_masked_relevant_rate": _rate(kept_rel_masked, n_rel_masked),
        "precision_kept": _rate(kept_rel, n_kept),
        "balanced_accuracy": (recall + dropped) / 2 if recall is not None and dropped is not None else None,
        "undecided": missing,
        "text_mismatch": text_mismatch,
        "drop_reasons": dict(sorted(reasons.items())),
    }


# -- one set -----------------------------------------------------------------------------------


def bench_set(name: str, scorers: list[str], args, work: Path, prefect_home: Path) -> dict:
    header, rows = rs.load_set(rs.set_path(name))
    root = work / name
    root.mkdir(parents=True, exist_ok=True)
    log = root / "commands.log"
    trained = root / "trained"
    marker = trained / "bench-trained.json"  # written once training finished
    train = ["train", "--base-model", args.base_model, "--folds", str(args.folds), "--seed", str(args.seed)]
    if args.epochs:
        train += ["--epochs", str(args.epochs)]
    if args.max_steps:
        train += ["--max-steps", str(args.max_steps)]
    env = cli_env(trained, prefect_home)
    times: dict[str, float] = {}
    started = time.perf_counter()
    if marker.exists() and json.loads(marker.read_text()).get("train") == train:
        print(f"  {name}: reusing the warehouse trained in {trained}", flush=True)
        times.update(json.loads(marker.read_text())["times_s"])
    else:
        shutil.rmtree(trained, ignore_errors=True)
        images, captions = write_source(rows, root)
        times["ingest"], _ = run(["ingest", "--source", str(images)], env, log)
        times["harvest_classes"], _ = run(["harvest", "classes", "--no-wikipedia"], env, log)
        times["harvest_images"], _ = run(["harvest", "images", "--captions", str(captions)], env, log)
        if args.validate:
            times["validate"], _ = run(["validate"], env, log)
        times["train"], _ = run([*train, *([] if args.validate else ["--allow-invalid"])], env, log)
        marker.write_text(json.dumps({"train": train, "times_s": times}))
    models = sql("SELECT model_id, fold, metrics FROM models", env, log)
    results = {}
    for scorer in scorers:
        try:
            times[f"curate_{scorer}"], _ = run(["curate", "--scorer", scorer], env, log)
        except SystemExit as exc:
            print(f"  {name}: curate --scorer {scorer} failed: {exc}", file=sys.stderr)
            results[scorer] = {"error": str(exc)}
            continue
        decisions = read_decisions(env, log)
        result = measure(rows, decisions)
        result["scorer_used"] = decisions[0]["scorer_used"] if decisions else None
        result["scorer_reason"] = decisions[0]["scorer_reason"] if decisions else None
        results[scorer] = result
        print(f"  {name:12s} {scorer:12s} done in {times[f'curate_{scorer}']:.0f} s", flush=True)
    wall = time.perf_counter() - started
    return {
        "set": name,
        "classes": len(header["classes"]),
        "texts": len(rows),
        "rates": header["rates"],
        "wall_s": wall,
        "times_s": times,
        "models": len(models),
        "scorers": results,
        "log": str(log),
    }


# -- report ------------------------------------------------------------------------------------


def _pct(x: float | None) -> str:
    return "   -  " if x is None else f"{100 * x:5.1f}%"


def print_table(results: list[dict]) -> None:
    print()
    print(
        f"{'set':12s} {'scorer':16s} {'kept rel':>8s} {'drop irr':>8s} {'(other':>7s} {'close':>6s} "
        f"{'junk)':>6s} {'prec':>6s} {'kept':>11s} {'TF-IDF k/d':>15s} {'BA / TF-IDF':>11s}"
    )
    for s in results:
        base = s["scorers"].get(BASELINE, {})
        for scorer, r in s["scorers"].items():
            if "error" in r:
                print(f"{s['set']:12s} {scorer:16s} failed: {r['error'][:80]}")
                continue
            used = r.get("scorer_used")
            label = f"{scorer}→{used}" if used and used != scorer else scorer
            ratio = (
                r["balanced_accuracy"] / base["balanced_accuracy"]
                if base.get("balanced_accuracy") and r.get("balanced_accuracy") is not None
                else None
            )
            print(
                f"{s['set']:12s} {label[:16]:16s} {_pct(r['kept_relevant_rate']):>8s} "
                f"{_pct(r['dropped_irrelevant_rate']):>8s} {_pct(r['dropped_other_class_rate']):>7s} "
                f"{_pct(r['dropped_close_class_rate']):>6s} {_pct(r['dropped_junk_rate']):>6s} "
                f"{_pct(r['precision_kept']):>6s} {r['kept']:5d}/{r['texts']:<5d} "
                f"{_pct(base.get('kept_relevant_rate')):>7s}/{_pct(base.get('dropped_irrelevant_rate')):>7s} "
                f"{'   -' if ratio is None else f'{ratio:6.3f}':>11s}"
            )
    print(
        "\nkept rel: relevant texts kept; drop irr: irrelevant texts dropped (other-class, of them from a close "
        "class, junk); prec: share of kept texts that are relevant; TF-IDF k/d: the baseline scorer's kept rel / "
        "drop irr on the same training run; BA / TF-IDF: balanced accuracy over the baseline's."
    )
    reasons = [
        (s["set"], k, r["drop_reasons"]) for s in results for k, r in s["scorers"].items() if "error" not in r
    ]
    if any(any(not key.endswith(":-") for key in rr) for _, _, rr in reasons):
        print("\ndrops per kind:reason")
        for set_name, scorer, rr in reasons:
            print(f"  {set_name:12s} {scorer:12s} " + ", ".join(f"{k}={v}" for k, v in rr.items()))
    for s in results:
        t = ", ".join(f"{k} {v:.0f}s" for k, v in s["times_s"].items())
        print(f"\n{s['set']}: {s['classes']} classes, {s['texts']} texts, wall {s['wall_s']:.0f} s ({t})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default=",".join(rs.EVAL_SETS), help="comma-separated set names")
    parser.add_argument("--dev", action="store_true", help="run the dev sets (the ones to tune on) instead")
    parser.add_argument(
        "--scorers", help="comma-separated (default: every --scorer choice of `imtext curate`)"
    )
    parser.add_argument("--base-model", default="minilm-offline")
    parser.add_argument("--folds", type=int, default=2)
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--max-steps", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--validate", action="store_true", help="run `imtext validate` instead of --allow-invalid"
    )
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument(
        "--code",
        type=Path,
        help="run the imtext of this source tree (e.g. `git archive HEAD | tar -x -C DIR`) instead of the "
        "working tree, which others may be editing; the virtual environment stays .venv",
    )
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: temporary)")
    args = parser.parse_args(argv)
    global CODE
    CODE = args.code.resolve() if args.code else ROOT

    names = list(rs.DEV_SETS) if args.dev else [n.strip() for n in args.sets.split(",") if n.strip()]
    unknown = [n for n in names if n not in rs.ALL_SETS]
    if unknown:
        parser.error(f"unknown sets {unknown}; known: {', '.join(rs.ALL_SETS)}")
    work = args.keep or Path(tempfile.mkdtemp(prefix="imtext-relevance-"))
    work.mkdir(parents=True, exist_ok=True)
    prefect_home = work / "prefect"  # one for the whole bench: Prefect's database is made once
    scorers = (
        [s.strip() for s in args.scorers.split(",") if s.strip()]
        if args.scorers
        else scorer_choices(cli_env(work / "probe-home", prefect_home))
    )
    if BASELINE not in scorers:
        scorers.append(BASELINE)
    load_start = os.getloadavg()
    print(
        f"sets {', '.join(names)}; scorers {', '.join(scorers)}; base model {args.base_model}, "
        f"{args.folds} folds; {os.cpu_count()} cores, load average {load_start[0]:.2f} {load_start[1]:.2f} "
        f"{load_start[2]:.2f}; code {CODE}; work in {work}",
        flush=True,
    )
    started = time.perf_counter()
    results = []
    try:
        for name in names:
            results.append(bench_set(name, scorers, args, work, prefect_home))
    finally:
        if results:
            print_table(results)
        load_end = os.getloadavg()
        wall = time.perf_counter() - started
        print(
            f"\ntotal wall {wall:.0f} s; load average at the end {load_end[0]:.2f} {load_end[1]:.2f} "
            f"{load_end[2]:.2f}"
        )
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(
                json.dumps(
                    {
                        "sets": results,
                        "scorers": scorers,
                        "base_model": args.base_model,
                        "folds": args.folds,
                        "epochs": args.epochs,
                        "max_steps": args.max_steps,
                        "wall_s": wall,
                        "load_average_start": load_start,
                        "load_average_end": load_end,
                        "cores": os.cpu_count(),
                    },
                    indent=2,
                )
            )
            print(f"results in {args.json}")
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
