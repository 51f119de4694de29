"""Benchmark: `imtext curate --scorer baseline` end to end against its model predicting the same texts alone.

A warehouse of N image texts is built once (Flickr-like titles, descriptions and tag lists of
about three texts per image, over --classes ImageNet classes; some camera file names marked junk)
and the TF-IDF baseline is cross-fitted on it through the train flow's own steps (its data, run
row and folds, `fit_baseline_task` per fold, registered in `models`). Only the K fold models are
fitted: every text existed at training, so the model on everything would judge none (and it is the
slowest fit). A second warehouse of N/10
texts is built the same way. Both are cached under bench/out/curate/ and copied afresh for each
measurement, so every curate run scores every text.

Then, in one run:

- curate: `imtext curate --scorer baseline` through the CLI on a fresh copy of each warehouse
  (wall and CPU seconds of the command and every process it waited for). Its per-text cost is the
  difference of the two sizes, (wall_N - wall_N/10) / (N - N/10), so start-up (imports, the local
  Prefect server, the flow run's bookkeeping, the model loads) cancels out; start-up is reported
  apart as wall_N/10 less N/10 texts at the per-text cost.
- model alone: the fitted models that curate used (each text's out-of-fold scorer, assigned as
  curate assigns it), loaded and given their texts already in memory; timed: `predict_proba` and the
  top-1 (argmax) and top-5 of every text, nothing else.

The ratio curate / model alone (texts per second, per-text cost of curate) is the goal's (>= 0.7).
Each leg's best of --repeat runs counts (the machine may be shared); the load average is printed.
Every curate run's scores and decisions are digested: the runs must agree.

- `--compare DIR`: the curate runs of another source tree (`git archive <commit> | tar -x -C DIR`)
  interleaved with this tree's on the same warehouses and models: before and after a change in the
  same conditions, and a check that both write the same scores and decisions.
- `--stages`: the curate flow in-process at both sizes (each in its own process), every step
  timed, with its cost per text (no Prefect server start, so steadier than the CLI's difference).
- `--profile`: the curate flow on the large copy in this process under cProfile.

    .venv/bin/python bench/curate.py [--texts 50000] [--classes 300] [--repeat 3] [--compare DIR]
    .venv/bin/python bench/curate.py --stages | --profile
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "bench" / "out" / "curate"
GOAL = 0.7

FILLER = (
    "my our the a at in on with near after during very old new little big happy sunny morning evening "
    "summer winter holiday trip family friends garden park street city beach lake river forest mountain "
    "home zoo weekend visit walk day night"
).split()
TAGS = (
    "nikon canon sony d80 2008 2009 2010 vacation travel nature flickr geotagged explore 50mm bokeh macro "
    "friends holiday iphone film blackandwhite sunset sky"
).split()
BOILERPLATE = [
    "Uploaded from my phone",
    "All rights reserved",
    "Please visit my website for more photos",
    "Taken with a Canon EOS 400D",
]


# --------------------------------------------------------------------------------------------------
# The workload


def make_rows(n_texts: int, n_classes: int, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(images, image_texts) rows: about three short Flickr-like texts per image."""
    import datetime as dt

    from warehouse.catalog import read_classes

    rng = random.Random(seed)
    classes = read_classes().to_dicts()
    classes = sorted(rng.sample(classes, n_classes), key=lambda c: c["wnid"])
    now = dt.datetime.now(dt.UTC)
    images, texts = [], []
    i = 0
    while len(texts) < n_texts:
        row = classes[i % len(classes)]
        image_id = f"{row['wnid']}_{i // len(classes)}"
        i += 1
        images.append(
            {"image_id": image_id, "wnid": row["wnid"], "split": "train", "path": f"/bench/{image_id}.JPEG"}
        )
        lemmas = [s.strip() for s in row["lemmas"].split(",") if s.strip()]
        name = rng.choice(lemmas)
        gloss = row["gloss"].split()
        fields = []
        roll = rng.random()
        if roll < 0.1:
            fields.append(("title", f"DSC_{rng.randrange(10000):04d}.JPG", "camera-filename"))
        elif roll < 0.7:
            words = rng.sample(FILLER, rng.randint(1, 4)) + [name] * (rng.random() < 0.75)
            rng.shuffle(words)
            fields.append(("title", " ".join(words), None))
        else:
            fields.append(
                ("title", rng.choice(["Untitled", "Summer 2009", "Weekend", "Day 3", "Home"]), None)
            )
        roll = rng.random()
        if roll < 0.5:
            start = rng.randrange(max(1, len(gloss) - 4))
            words = gloss[start : start + rng.randint(4, 12)]
            fields.append(("description", f"A {name} " + " ".join(words), None))
        elif roll < 0.7:
            fields.append(("description", rng.choice(BOILERPLATE), None))
        elif roll < 0.9:
            fields.append(("description", " ".join(rng.sample(FILLER, rng.randint(4, 10))), None))
        tags = rng.sample(TAGS, rng.randint(1, 6)) + [name] * (rng.random() < 0.6)
        rng.shuffle(tags)
        fields.append(("tags", ", ".join(tags), None))
        for field, text, junk in fields:
            if len(texts) >= n_texts:
                break
            key = f"{image_id}|flickr|{field}|{text}".encode()
            texts.append(
                {
                    "text_id": hashlib.blake2b(key, digest_size=12).hexdigest(),
                    "image_id": image_id,
                    "source": "flickr",
                    "field": field,
                    "text": text,
                    "raw_text": text,
                    "junk": junk,
                    "fetched_at": now,
                    "run_id": "bench-harvest",
                }
            )
    return images, texts


def build(home: Path, n_texts: int, n_classes: int, folds: int, seed: int) -> dict:
    """The warehouse of `home` with its texts, and the baseline cross-fitted as the train flow does."""
    import datetime as dt

    import pyarrow as pa

    os.environ["IMTEXT_HOME"] = str(home)
    from flows.commands.common import prefect_env

    prefect_env()
    from prefect import flow, get_run_logger

    from flows.runtime import open_warehouse, run_id
    from flows.settings import load_settings
    from tasks.model import steps
    from tasks.model.data import record_folds
    from tasks.model.devices import DistInfo
    from tasks.model.fits import RunSpec
    from tasks.model.registry import record_training_run, register_models
    from tasks.model.training import TrainConfig

    images, texts = make_rows(n_texts, n_classes, seed)
    settings = load_settings()
    wh = open_warehouse(settings)
    wh.insert_arrow(
        "INSERT INTO images (image_id, wnid, split, path) SELECT image_id, wnid, split, path FROM new_images",
        new_images=pa.Table.from_pylist(images),
    )
    wh.insert_arrow(
        "INSERT INTO image_texts (text_id, image_id, source, field, text, raw_text, junk, fetched_at, run_id) "
        "SELECT text_id, image_id, source, field, text, raw_text, junk, fetched_at, run_id FROM new_texts",
        new_texts=pa.Table.from_pylist(texts),
    )

    @flow(name="bench-train-baseline")
    def train_baseline_only() -> dict:
        """The train flow's baseline steps alone: data, run row, folds, fold models, the run done."""
        logger = get_run_logger()
        started = dt.datetime.now(dt.UTC)
        spec = RunSpec("tiny-roberta", folds, TrainConfig(seed=seed), run_id(), settings.models_dir)
        data, balance = steps.training_data(wh.con, wh.current_snapshot(), spec, logger)
        run = steps.run_row(spec, data, balance, DistInfo.detect(), baseline=True, started=started)
        record_training_run(wh, run)
        record_folds(wh, spec.run_id, data.image_folds)
        rows = []
        for fold in range(folds):  # the fold models: the model on everything judges no text here
            rows.append(steps.fit_baseline_task(data, fold, spec))
            register_models(wh, rows[-1:])
        record_training_run(wh, steps.finished_run(run, "done", dt.datetime.now(dt.UTC)))
        return {"models": len(rows), "texts_per_s": [r["metrics"]["texts_per_s"] for r in rows]}

    started = time.perf_counter()
    trained = train_baseline_only()
    wh.close()
    return {"texts": len(texts), "images": len(images), "train_s": time.perf_counter() - started, **trained}


def prepared(n_texts: int, args) -> Path:
    """The cached, trained warehouse home of `n_texts` texts (built when missing)."""
    home = OUT / f"home-{n_texts}-{args.classes}c-{args.folds}f-s{args.seed}"
    if (home / "bench.json").exists():
        return home
    shutil.rmtree(home, ignore_errors=True)
    print(f"building and training {home.name} (once) ...", flush=True)
    meta = child(["--build", str(home), "--texts", str(n_texts)], args)
    (home / "bench.json").write_text(json.dumps(meta))
    print(f"  {meta['texts']:,} texts, {meta['models']} baseline models trained in {meta['train_s']:.0f}s")
    return home


def fresh_copy(home: Path) -> Path:
    """A copy of the home to curate (the models themselves are read from the cached home)."""
    work = Path(tempfile.mkdtemp(prefix="bench-curate-", dir=OUT))
    shutil.copytree(home / "warehouse", work / "warehouse")
    return work


# --------------------------------------------------------------------------------------------------
# The two legs


def env_for(home: Path, code: Path = ROOT) -> dict[str, str]:
    from bench.startup import base_env

    return base_env(OUT / "prefect") | {
        "IMTEXT_HOME": str(home),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PYTHONPATH": str(code),
    }


def curate_cli(home: Path, code: Path = ROOT) -> dict:
    """`imtext curate --scorer baseline` (the code in `code`) on a fresh copy of `home`: wall and CPU
    seconds of the command and every process it waited for, and the load average at its start."""
    work = fresh_copy(home)
    argv = [sys.executable, "-m", "flows.cli", "curate", "--scorer", "baseline"]
    try:
        before, load = resource.getrusage(resource.RUSAGE_CHILDREN), os.getloadavg()[0]
        started = time.perf_counter()
        done = subprocess.run(argv, cwd=code, env=env_for(work, code), capture_output=True, text=True)
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode:
            raise SystemExit(f"curate failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        texts, digest = scored_texts(work)
        return {"wall_s": wall, "cpu_s": cpu, "load": load, "texts": texts, "digest": digest}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def scored_texts(home: Path) -> tuple[int, str]:
    """Score rows written, and a digest of every score and decision (equal runs write equal digests)."""
    from warehouse.db import Warehouse

    logging.getLogger("warehouse.db").setLevel(logging.ERROR)  # "the warehouse moved": it is a copy
    wh = Warehouse(f"sqlite:{home}/warehouse/catalog.sqlite", f"{home}/warehouse/data/", follows_home=True)
    con = wh.reader()
    try:
        rows, digest = con.execute(
            "SELECT count(*), md5(string_agg(concat_ws('|', text_id, model_id, p_true, true_rank, pred_wnid, "
            "pred_p, kept, reason, policy), ',' ORDER BY text_id, model_id)) FROM text_scores"
        ).fetchone()
    finally:
        con.close()
    return int(rows), digest


def model_alone(home: Path) -> dict:
    """The curation's models on their texts, in memory: predict_proba + top-1 + top-5 timed alone."""
    import numpy as np

    from flows.settings import load_settings
    from tasks.curate import store
    from tasks.curate.plan import assign_scorers, plan_scoring, read_folds, read_models
    from tasks.model.baseline import load_baseline
    from warehouse.db import Warehouse

    os.environ["IMTEXT_HOME"] = str(home)
    wh = Warehouse.from_settings(load_settings())
    con = wh.con
    plan = plan_scoring(read_models(con), "baseline")
    assigned = assign_scorers(store.read_texts(con, plan.snapshot), plan, read_folds(con, plan.training_run))
    wh.close()
    seconds = cpu = 0.0
    for model_id, group in assigned.group_by("model_id"):
        model = load_baseline(plan.spec(model_id[0]).members[0].path)
        texts = group["text"].fill_null("").to_list()
        start, cpu_start = time.perf_counter(), time.process_time()
        probs = model.predict_proba(texts)
        top1 = probs.argmax(axis=1)
        top5 = np.argpartition(-probs, min(5, probs.shape[1] - 1), axis=1)[:, :5]
        seconds += time.perf_counter() - start
        cpu += time.process_time() - cpu_start
        assert len(top1) == len(top5) == group.height
        del model, probs
    return {"texts": assigned.height, "wall_s": seconds, "cpu_s": cpu, "load": os.getloadavg()[0]}


# (module, attribute, stage name): the curate flow's steps, and inside scoring the model's own work.
STAGES = [
    ("flows.curate", "plan_scoring", "plan"),
    ("tasks.curate.store", "read_texts", "read texts"),
    ("flows.curate", "assign_scorers", "assign scorers"),
    ("flows.curate", "_held_out", "held-out pass"),
    ("flows.curate", "_score", "score (all)"),
    ("tasks.curate.score", "load_scorer", "  load models"),
    ("tasks.curate.score", "score_table", "  score chunks"),
    ("tasks.model.baseline:TfidfLinearModel", "decision_function", "    model margins"),
    ("tasks.curate.score", "write_scores", "  write scores (thread)"),
    ("tasks.curate.store", "read_decisions", "read decisions"),
    ("flows.curate", "apply_policy", "apply policy"),
    ("flows.curate", "per_class_stats", "per-class stats"),
    ("flows.curate", "_write_report", "report"),
    ("tasks.curate.store", "persist_task", "persist decisions"),
    ("warehouse.db:Warehouse", "compact", "compact"),
    ("flows.curate", "_publish", "artifacts"),
    ("warehouse.db:Warehouse", "close", "close warehouse"),
]


def stage_times(home: Path) -> dict:
    """The curate flow run in this process on a fresh copy of `home`, each step of STAGES timed (wall)."""
    import functools
    import importlib

    work = fresh_copy(home)
    os.environ.update({k: v for k, v in env_for(work).items() if k.startswith(("PREFECT_", "IMTEXT_"))})
    from flows.commands.common import prefect_env

    prefect_env()
    import flows.curate

    times: dict[str, float] = {}

    def timed(name, fn):
        @functools.wraps(fn)
        def wrapper(*a, **k):
            start = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                times[name] = times.get(name, 0.0) + time.perf_counter() - start

        return wrapper

    for where, attr, name in STAGES:
        module, _, cls = where.partition(":")
        owner = importlib.import_module(module)
        owner = getattr(owner, cls) if cls else owner
        setattr(owner, attr, timed(name, getattr(owner, attr)))
    start = time.perf_counter()
    summary = flows.curate.curate_flow(scorer="baseline")
    times["flow run"] = time.perf_counter() - start
    shutil.rmtree(work, ignore_errors=True)
    return {"texts": summary["texts"], "times": times}


def print_stages(n_big: int, n_small: int, big: dict, small: dict) -> None:
    texts = n_big - n_small
    print(f"{'step':<26}{f'{n_small:,} s':>10}{f'{n_big:,} s':>10}{'µs/text':>10}")
    for name in ["flow run", *[s[2] for s in STAGES]]:
        b, a = big["times"].get(name, 0.0), small["times"].get(name, 0.0)
        print(f"{name:<26}{a:10.2f}{b:10.2f}{(b - a) / texts * 1e6:10.1f}")


def profile(home: Path, top: int) -> None:
    """The curate flow in this process under cProfile, on a fresh copy of `home`."""
    import cProfile
    import pstats

    work = fresh_copy(home)
    os.environ.update({k: v for k, v in env_for(work).items() if k.startswith(("PREFECT_", "IMTEXT_"))})
    from flows.commands.common import prefect_env

    prefect_env()
    from flows.curate import curate_flow

    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    summary = curate_flow(scorer="baseline")
    profiler.disable()
    print(f"curate flow: {summary['texts']:,} texts in {time.perf_counter() - start:.1f}s (in process)")
    profiler.dump_stats(OUT / "curate.prof")
    stats = pstats.Stats(profiler).strip_dirs()
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)
    print(f"(the whole profile: {OUT / 'curate.prof'})")
    shutil.rmtree(work, ignore_errors=True)


# --------------------------------------------------------------------------------------------------
# Running


def child(extra: list[str], args) -> dict:
    """One step in its own process; its last stdout line is JSON."""
    cmd = [
        sys.executable, __file__, "--classes", str(args.classes), "--folds", str(args.folds),
        "--seed", str(args.seed), *extra,
    ]  # fmt: skip
    home = Path(extra[1])
    proc = subprocess.run(cmd, cwd=ROOT, env=env_for(home), capture_output=True, text=True)
    if proc.returncode:
        sys.stderr.write(proc.stdout[-2000:] + proc.stderr[-4000:])
        raise SystemExit(f"{extra[0]} failed")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def best(runs: list[dict]) -> dict:
    return min(runs, key=lambda r: r["wall_s"])


def report(n_big: int, n_small: int, big: dict, small: dict, alone: dict) -> dict:
    texts = n_big - n_small
    per_text = {k: (big[k] - small[k]) / texts for k in ("wall_s", "cpu_s")}
    out = {
        "curate_texts_per_s": 1 / per_text["wall_s"],
        "curate_texts_per_cpu_s": 1 / per_text["cpu_s"],
        "curate_whole_texts_per_s": n_big / big["wall_s"],
        "startup_s": small["wall_s"] - n_small * per_text["wall_s"],
        "startup_cpu_s": small["cpu_s"] - n_small * per_text["cpu_s"],
        "alone_texts_per_s": alone["texts"] / alone["wall_s"],
        "alone_texts_per_cpu_s": alone["texts"] / alone["cpu_s"],
    }
    out["ratio"] = out["curate_texts_per_s"] / out["alone_texts_per_s"]
    out["ratio_cpu"] = out["curate_texts_per_cpu_s"] / out["alone_texts_per_cpu_s"]
    out["ratio_whole"] = out["curate_whole_texts_per_s"] / out["alone_texts_per_s"]
    print(
        f"curate, per text ({n_big:,} less {n_small:,} texts): {out['curate_texts_per_s']:8,.0f} texts/s, "
        f"{out['curate_texts_per_cpu_s']:8,.0f} texts/CPU-s\n"
        f"curate, whole command on {n_big:,} texts:    {out['curate_whole_texts_per_s']:8,.0f} texts/s "
        f"({big['wall_s']:.1f}s wall, {big['cpu_s']:.1f}s CPU; start-up {out['startup_s']:.1f}s wall, "
        f"{out['startup_cpu_s']:.1f}s CPU)\n"
        f"model alone on {alone['texts']:,} texts:           {out['alone_texts_per_s']:8,.0f} texts/s, "
        f"{out['alone_texts_per_cpu_s']:8,.0f} texts/CPU-s ({alone['wall_s']:.1f}s)\n"
        f"curate / model alone: {out['ratio']:.2f}x per wall second, {out['ratio_cpu']:.2f}x per CPU second "
        f"(goal >= {GOAL}x); whole command {out['ratio_whole']:.2f}x"
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=50_000, help="N: texts of the large warehouse")
    parser.add_argument("--small", type=int, default=None, help="texts of the small one (default N/10)")
    parser.add_argument("--classes", type=int, default=300)
    parser.add_argument("--folds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each leg; the best counts")
    parser.add_argument("--profile", action="store_true", help="cProfile the flow on N texts instead")
    parser.add_argument("--stages", action="store_true", help="time the flow's steps at both sizes instead")
    parser.add_argument("--top", type=int, default=40, help="rows of the profile")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument(
        "--compare",
        type=Path,
        default=None,
        help="another source tree (e.g. a `git archive` of an older "
        "commit): its curate runs interleaved with this tree's, on the same warehouses and models",
    )
    parser.add_argument("--build", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--alone", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--stages-of", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build:
        print(json.dumps(build(args.build, args.texts, args.classes, args.folds, args.seed)))
        return
    if args.alone:
        print(json.dumps(model_alone(args.alone)))
        return
    if args.stages_of:
        print(json.dumps(stage_times(args.stages_of)))
        return

    OUT.mkdir(parents=True, exist_ok=True)
    n_big, n_small = args.texts, args.small or args.texts // 10
    big_home, small_home = prepared(n_big, args), prepared(n_small, args)
    if args.profile:
        profile(big_home, args.top)
        return
    if args.stages:
        print(
            f"load {os.getloadavg()[0]:.1f}; the curate flow's steps, each size in its own process",
            flush=True,
        )
        small = child(["--stages-of", str(small_home)], args)
        big = child(["--stages-of", str(big_home)], args)
        print_stages(n_big, n_small, big, small)
        print(f"load {os.getloadavg()[0]:.1f} at the end")
        return
    measure(args, n_big, n_small, big_home, small_home)


def measure(args, n_big: int, n_small: int, big_home: Path, small_home: Path) -> None:
    """Both legs, --repeat times, interleaved (and the --compare tree's curate beside this one's)."""
    trees = {"this tree": ROOT} | ({f"{args.compare}": args.compare} if args.compare else {})
    print(
        f"load {os.getloadavg()[0]:.1f}; {n_big:,} and {n_small:,} texts, {args.classes} classes", flush=True
    )
    runs: dict[str, dict[str, list[dict]]] = {t: {"big": [], "small": []} for t in trees}
    alone: list[dict] = []
    for _ in range(args.repeat):
        for tree, code in trees.items():
            for size, home in (("big", big_home), ("small", small_home)):
                r = curate_cli(home, code)
                runs[tree][size].append(r)
                print(
                    f"  curate {size:5s} {r['texts']:7,} texts {r['wall_s']:6.1f}s wall {r['cpu_s']:6.1f}s CPU  "
                    f"load {r['load']:.1f}  ({tree})",
                    flush=True,
                )
            assert runs[tree]["big"][-1]["texts"] == n_big and runs[tree]["small"][-1]["texts"] == n_small
        r = child(["--alone", str(big_home)], args)
        alone.append(r)
        print(
            f"  alone        {r['texts']:7,} texts {r['wall_s']:6.1f}s wall {r['cpu_s']:6.1f}s CPU  load {r['load']:.1f}"
        )
    digests = {size: {r["digest"] for t in trees for r in runs[t][size]} for size in ("big", "small")}
    same = all(len(d) == 1 for d in digests.values())
    print(f"scores and decisions: {'identical in every run' if same else 'DIFFER between runs'}")
    results = {}
    for tree in trees:
        print(f"\n{tree} (best of {args.repeat}):")
        results[tree] = report(
            n_big, n_small, best(runs[tree]["big"]), best(runs[tree]["small"]), best(alone)
        )
    print(f"load {os.getloadavg()[0]:.1f} at the end")
    if args.json:
        record = {"args": {k: str(v) for k, v in vars(args).items()}, "runs": runs, "alone": alone}
        args.json.write_text(json.dumps(record | {"results": results}, indent=1))


if __name__ == "__main__":
    main()
