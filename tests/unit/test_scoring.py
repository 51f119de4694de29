"""Curation logic on inline data: the policy, labels and thresholds, scorer maths, the plan, masking."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from tasks.common.errors import InputError
from tasks.curate.calibration import fit_temperature, fit_weights
from tasks.curate.decisions import is_junk
from tasks.curate.labels import choose_threshold, load_labels, pr_curve, relevance_metrics
from tasks.curate.masked import mask_class_names
from tasks.curate.plan import ModelRef, assign_scorers, plan_scoring
from tasks.curate.policy import DEFAULT_MIN_P_TRUE, DEFAULT_TOP_K, Policy
from tasks.curate.scorers import EnsembleScorer, TransformerScorer, summarise
from tasks.model.folds import fold_of

# -- policy ------------------------------------------------------------------------------------


def test_policy_threshold_is_inclusive_and_rank_rule_is_off_by_default():
    p = Policy(min_p_true=0.2)
    kept = p.keep([0.2, 0.1999, 0.9, 0.05], [1, 1, 1, 1], [False] * 4)
    assert kept.tolist() == [True, False, True, False]


def test_policy_rank_rule_keeps_low_probability_texts_whose_class_ranks_high():
    p = Policy(min_p_true=0.5, top_k=3)
    kept = p.keep([0.01, 0.01, 0.6], [3, 4, 50], [False, False, False])
    assert kept.tolist() == [True, False, True]


def test_junk_is_evidence_not_a_verdict():
    p = Policy(min_p_true=0.2, top_k=5, junk_min_p_true=0.5)
    # junk: the rank rule does not apply and the bar is max(min_p_true, junk_min_p_true)
    kept = p.keep([0.3, 0.3, 0.5, 0.95], [1, 1, 1, 1], [False, True, True, True])
    assert kept.tolist() == [True, False, True, True]
    strict = Policy(min_p_true=0.8, junk_min_p_true=0.5)
    assert strict.keep([0.6], [1], [True]).tolist() == [False]


def test_policy_extremes_and_bad_values():
    assert Policy(min_p_true=0.0, junk_min_p_true=0.0).keep([0.0, 0.0], [9, 9], [False, True]).all()
    assert Policy(min_p_true=1.0).keep([1.0, 0.999], [1, 1]).tolist() == [True, False]
    for bad in ({"min_p_true": 1.5}, {"min_p_true": -0.1}, {"top_k": -1}, {"junk_min_p_true": 2}):
        with pytest.raises(InputError):
            Policy(**bad)
    assert json.loads(Policy().to_json())["min_p_true"] == DEFAULT_MIN_P_TRUE


def test_junk_marks_are_any_non_empty_reason():
    assert is_junk([None, "", "  ", "camera-filename"]).tolist() == [False, False, False, True]


# -- labels, metrics, thresholds ---------------------------------------------------------------


def test_load_labels_checks_lines_and_keeps_the_last_duplicate(tmp_path):
    path = tmp_path / "labels.jsonl"
    path.write_text(
        '{"text_id": "a", "relevant": true}\n\n{"text_id": "b", "relevant": 0}\n{"text_id": "a", "relevant": false}\n'
    )
    labels = load_labels(path)
    assert dict(labels.iter_rows()) == {"a": False, "b": False}
    path.write_text('{"text_id": "a"}\n')
    with pytest.raises(InputError, match=":1:"):
        load_labels(path)
    path.write_text('{"text_id": "a", "relevant": "maybe"}\n')
    with pytest.raises(InputError, match="true or false"):
        load_labels(path)
    with pytest.raises(FileNotFoundError):
        load_labels(tmp_path / "missing.jsonl")


def test_relevance_metrics_of_keep_and_drop_decisions():
    kept = [True, True, False, False, False]
    relevant = [True, False, True, False, False]
    m = relevance_metrics(kept, relevant)
    assert (m["kept"], m["dropped"], m["relevant"]) == (2, 3, 2)
    assert m["keep_precision"] == 0.5 and m["keep_recall"] == 0.5
    assert m["drop_precision"] == pytest.approx(2 / 3) and m["drop_recall"] == pytest.approx(2 / 3)
    assert (m["precision"], m["recall"]) == (m["drop_precision"], m["drop_recall"])
    nothing = relevance_metrics([False, False], [True, True])
    assert nothing["keep_precision"] is None and nothing["drop_recall"] is None


def test_threshold_reaching_a_target_precision_has_the_best_recall():
    p = np.array([0.95, 0.9, 0.8, 0.7, 0.6, 0.3, 0.2])
    y = np.array([True, True, False, True, True, False, False])
    curve = pr_curve(p, y)
    row = curve.filter(pl.col("threshold") == 0.6).row(0, named=True)
    assert row["kept"] == 5 and row["precision"] == pytest.approx(0.8) and row["recall"] == 1.0
    threshold, reached = choose_threshold(curve, 0.8)
    assert reached and threshold == pytest.approx(0.6)
    threshold, reached = choose_threshold(curve, 1.0)
    assert reached and threshold == pytest.approx(0.9)
    # every kept set at this threshold passes the target
    kept = Policy(min_p_true=threshold).keep(p, np.full(p.size, 9))
    assert relevance_metrics(kept, y)["keep_precision"] >= 1.0


def test_unreachable_target_takes_the_most_precise_threshold():
    curve = pr_curve([0.9, 0.8, 0.7], [False, True, False])
    threshold, reached = choose_threshold(curve, 0.99)
    assert not reached and threshold == pytest.approx(0.8)
    with pytest.raises(InputError):
        choose_threshold(curve, 0.0)


def test_curve_honours_the_rank_rule_and_the_junk_floor():
    p = np.array([0.9, 0.4, 0.3, 0.05])
    y = np.array([True, False, True, True])
    always = np.array([False, False, False, True])  # kept by rank whatever the threshold
    floor = np.array([0.0, 0.5, 0.0, 0.0])  # junk: needs p >= 0.5, so 0.4 is never kept
    curve = pr_curve(p, y, always=always, floor=floor)
    assert 0.4 not in curve["threshold"].to_list()
    at_03 = curve.filter(pl.col("threshold") == 0.3).row(0, named=True)
    assert at_03["kept"] == 3 and at_03["precision"] == 1.0
    top = curve.sort("threshold").row(-1, named=True)
    assert top["kept"] == 1  # above every p_true only the rank-kept text stays


# -- scorer maths ------------------------------------------------------------------------------


def test_summarise_ranks_ties_in_the_texts_favour_and_unknown_classes_last():
    probs = np.array([[0.4, 0.4, 0.2], [0.1, 0.3, 0.6], [0.5, 0.25, 0.25]])
    s = summarise(probs, ["a", "b", "c"], ["b", "b", "zzz"])
    assert s["p_true"].tolist() == [0.4, 0.3, 0.0]
    assert s["true_rank"].tolist() == [1, 2, 4]
    assert list(s["pred_wnid"]) == ["a", "c", "a"] and s["pred_p"].tolist() == [0.4, 0.6, 0.5]


class FakeScorer:
    def __init__(self, labels, table):
        self.labels = labels
        self.table = table

    def log_proba(self, texts):
        return np.log(np.array([self.table[t] for t in texts], dtype=np.float64))


def test_ensemble_averages_calibrated_probabilities_over_the_union_of_labels():
    a = FakeScorer(["x", "y"], {"t": [0.8, 0.2]})
    b = FakeScorer(["y", "z"], {"t": [0.5, 0.5]})
    plain = EnsembleScorer([a, b], [1.0, 1.0])
    assert plain.labels == ["x", "y", "z"]
    assert plain.predict_proba(["t"])[0] == pytest.approx([0.4, 0.35, 0.25])
    soft = EnsembleScorer([a, b], [1e6, 1.0])  # a huge temperature flattens a
    assert soft.predict_proba(["t"])[0] == pytest.approx([0.25, 0.5, 0.25], abs=1e-5)
    assert soft.predict_proba(["t"]).sum() == pytest.approx(1.0)


def test_fit_temperature_recovers_an_overconfident_scorer():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4000, 5)) * 2
    y = np.array([rng.choice(5, p=np.exp(r) / np.exp(r).sum()) for r in logits])
    labels = list("abcde")
    true = [labels[i] for i in y]
    assert fit_temperature(logits * 3, labels, true) == pytest.approx(3.0, rel=0.15)


# -- the plan ----------------------------------------------------------------------------------


def ref(run, kind, fold, folds=2, f1=0.5, status=None, seed=0):
    return ModelRef(
        model_id=f"{run}-{kind}-{fold}",
        kind=kind,
        fold=fold,
        folds=folds,
        seed=seed,
        path=f"/m/{run}/{kind}/{fold}",
        snapshot=7,
        run_id=run,
        base_model="tfidf-linear" if kind == "baseline" else "roberta-base",
        metrics={"macro_f1": f1},
        run_status=status,
    )


def full_run(run, t_f1=0.6, b_f1=0.5, status=None, with_full=True):
    folds = [0, 1, -1] if with_full else [0, 1]
    return [ref(run, "transformer", f, f1=t_f1, status=status) for f in folds] + [
        ref(run, "baseline", f, f1=b_f1, status=status) for f in folds
    ]


def test_auto_is_the_ensemble_of_every_kind_trained_and_says_why():
    plan = plan_scoring(full_run("r1", t_f1=0.7, b_f1=0.6))
    assert plan.scorer == "ensemble" and "weighted by the likelihood of held-out texts" in plan.reason
    assert (
        "transformer (held-out macro-F1 0.700)" in plan.reason
        and "baseline (held-out macro-F1 0.600)" in plan.reason
    )
    assert [m.kind for m in plan.specs[0].members] == ["transformer", "baseline"]
    four = full_run("r2") + [ref("r2", k, f) for k in ("frozen", "similarity") for f in (0, 1, -1)]
    plan = plan_scoring(four)
    assert [m.kind for m in plan.specs[1].members] == ["transformer", "baseline", "frozen", "similarity"]
    only = [m for m in full_run("r3") if m.kind == "baseline"]
    plan = plan_scoring(only)
    assert plan.scorer == "baseline" and plan.model_ids == [
        "r3-baseline-0",
        "r3-baseline-1",
        "r3-baseline--1",
    ]


def test_ensemble_weights_follow_held_out_likelihood():
    rng = np.random.default_rng(1)
    good = rng.uniform(0.6, 0.95, 500)  # a member that gives the true classes high probability
    poor = rng.uniform(0.01, 0.2, 500)
    w = fit_weights([good, poor])
    assert w[0] > 0.9 and w[1] < 0.1 and sum(w) == pytest.approx(1.0)
    assert fit_weights([good, good]) == pytest.approx([0.5, 0.5])
    members = [
        type(
            "M",
            (),
            {"labels": ["a", "b"], "log_proba": lambda self, t: np.log(np.array([[0.9, 0.1]] * len(t)))},
        )(),
        type(
            "M",
            (),
            {"labels": ["a", "b"], "log_proba": lambda self, t: np.log(np.array([[0.1, 0.9]] * len(t)))},
        )(),
    ]
    mixed = EnsembleScorer(members, [1.0, 1.0], [3.0, 1.0]).predict_proba(["x"])
    assert mixed[0].tolist() == pytest.approx([0.7, 0.3], abs=1e-6)


def test_latest_complete_finished_run_is_the_default():
    models = full_run("old") + [ref("partial", "transformer", 0)] + full_run("crashed", status="failed")
    plan = plan_scoring(models, "transformer")
    assert plan.training_run == "old"
    assert plan_scoring(models, "transformer", training_run="crashed").training_run == "crashed"
    with pytest.raises(InputError, match="no models were trained by"):
        plan_scoring(models, training_run="nope")
    with pytest.raises(InputError, match="imtext train"):
        plan_scoring([], "auto")
    only_transformers = [m for m in full_run("r") if m.kind == "transformer"]
    with pytest.raises(InputError, match="two kinds of models"):
        plan_scoring(only_transformers, "ensemble")
    assert plan_scoring(only_transformers).reason == "only transformer models were trained in this run"
    with pytest.raises(InputError, match="--scorer"):
        plan_scoring(only_transformers, "bert")


def test_ensemble_ids_are_stable_and_distinct_per_fold():
    plan = plan_scoring(full_run("r"), "ensemble")
    again = plan_scoring(full_run("r"), "ensemble")
    assert plan.model_ids == again.model_ids and len(set(plan.model_ids)) == 3
    assert all(i.startswith("ens-") for i in plan.model_ids)
    assert [m.kind for m in plan.specs[0].members] == ["transformer", "baseline"]
    assert plan.specs[-1].role == "new-texts" and plan.specs[1].role == "out-of-fold"


def test_each_text_goes_to_the_model_that_did_not_train_on_it():
    ids = [f"n01440764_{i}" for i in range(40)]
    texts = pl.DataFrame(
        {
            "text_id": [f"t{i}" for i in range(40)],
            "image_id": ids,
            "trained": [i < 30 for i in range(40)],  # ten texts arrived after training
        }
    )
    plan = plan_scoring(full_run("r"), "baseline")
    out = assign_scorers(texts, plan)
    for row in out.iter_rows(named=True):
        if row["trained"]:
            assert row["fold"] == fold_of(row["image_id"], 2, 0) and row["role"] == "out-of-fold"
            assert row["model_id"] == f"r-baseline-{row['fold']}"
        else:
            assert row["model_id"] == "r-baseline--1" and row["role"] == "new-texts"
    # without a model on everything, new texts fall back to their fold model (it never saw them either)
    plan = plan_scoring(full_run("r", with_full=False), "baseline")
    out = assign_scorers(texts, plan)
    assert out.filter(pl.col("fold") < 0).is_empty()


# -- the masked-name evaluation ----------------------------------------------------------------


def test_mask_class_names_replaces_every_lemma_and_plural_but_not_parts_of_words():
    lemmas = ["tabby", "tabby cat", "cat"]
    assert mask_class_names("My Tabby Cat and two cats", lemmas) == "My thing and two thing"
    assert mask_class_names("a category of concatenation", lemmas) == "a category of concatenation"
    assert mask_class_names("", lemmas) == "" and mask_class_names("cat", []) == "cat"
    assert mask_class_names("great white shark!", ["great white shark", "shark"], "x") == "x!"


def test_cli_help_states_the_real_defaults():
    from flows.commands import curate

    assert curate.HELP_DEFAULT_MIN_P_TRUE == DEFAULT_MIN_P_TRUE
    assert curate.HELP_DEFAULT_TOP_K == DEFAULT_TOP_K


def test_report_renders_and_escapes():
    from tasks.report import curation as report

    per_class = pl.DataFrame(
        {
            "class_index": [0, 1],
            "wnid": ["a", "b"],
            "name": ["<script>", "b"],
            "images": [2, 1],
            "texts": [3, 0],
            "kept": [1, 0],
            "kept_ratio": [1 / 3, None],
            "images_with_text": [1, 0],
        }
    )
    curve = pr_curve([0.9, 0.1], [True, False])
    html = report.curation_report_html(
        {
            "run_id": "r",
            "policy": Policy(min_p_true=0.2).as_dict(),
            "scorer": "baseline",
            "labels": {"labelled": 2},
        },
        p_true=np.array([0.9, 0.1, 0.5]),
        kept=np.array([True, False, True]),
        per_class=per_class,
        curve=curve,
    )
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert html.count("<svg") == 3 and "threshold 0.2" in html


# -- fast inference ----------------------------------------------------------------------------

TEXTS = [
    "goldfish",
    "a small orange goldfish swimming in a round glass bowl on the kitchen table",
    "pizza with cheese",
    "",
    "volcano erupting at night with glowing red lava running down the slopes toward the sea",
]


@pytest.fixture(scope="module")
def tiny():
    from tasks.model.classifier import build_classifier

    model, tokenizer, _ = build_classifier("tiny-roberta", ["a", "b", "c"], corpus=TEXTS * 20, seed=0)
    return model, tokenizer


def test_length_sorted_dynamic_padding_gives_the_scores_of_one_text_at_a_time(tiny):
    model, tokenizer = tiny
    scorer = TransformerScorer(model, tokenizer, batch_size=2, device="cpu")
    together = scorer.predict_proba(TEXTS)
    alone = np.concatenate([scorer.predict_proba([t]) for t in TEXTS])
    assert together.shape == (5, 3) and np.allclose(together.sum(axis=1), 1.0, atol=1e-5)
    assert np.allclose(together, alone, atol=1e-5)
    assert scorer.labels == ["a", "b", "c"]


@pytest.mark.gpu
def test_cuda_bf16_scores_agree_with_cpu(tiny):
    model, tokenizer = tiny
    cpu = TransformerScorer(model, tokenizer, device="cpu").predict_proba(TEXTS)
    gpu = TransformerScorer(model, tokenizer, device="cuda").predict_proba(TEXTS)
    assert np.abs(cpu - gpu).max() < 0.05


def test_cli_options_reach_the_flows():
    import typer
    from typer.testing import CliRunner

    from flows.commands import curate, export

    app = typer.Typer()
    curate.register(app)
    export.register(app)
    runner = CliRunner()
    text = runner.invoke(app, ["curate", "--help"], terminal_width=200).output
    for option in ("--min-p-true", "--top-k", "--scorer", "--labels", "--target-precision"):
        assert option in text
    text = runner.invoke(app, ["export", "--help"], terminal_width=200).output
    for option in ("--format", "--out", "--shard-size"):
        assert option in text
    bad = runner.invoke(app, ["curate", "--min-p-true", "2"])
    assert bad.exit_code == 2


def test_stored_training_folds_decide_who_judges_a_text():
    """Twins were put in one fold at training: curation must follow the stored folds, not the hash."""
    ids = [f"n01440764_{i}" for i in range(20)]
    texts = pl.DataFrame({"text_id": [f"t{i}" for i in range(20)], "image_id": ids, "trained": [True] * 20})
    plan = plan_scoring(full_run("r"), "baseline")
    # every image stored in the fold its hash would NOT give it (as a twin group can do)
    stored = pl.DataFrame({"image_id": ids[:15], "fold": [1 - fold_of(i, 2, 0) for i in ids[:15]]})
    out = assign_scorers(texts, plan, stored)
    folds = dict(zip(out["image_id"], out["fold"], strict=True))
    assert all(folds[i] == 1 - fold_of(i, 2, 0) for i in ids[:15])
    assert all(folds[i] == fold_of(i, 2, 0) for i in ids[15:])  # not stored: no training text, hash is safe
    assert out["text_id"].to_list() == texts["text_id"].to_list()


def test_report_shows_why_texts_were_dropped_per_class():
    from tasks.report import curation as report

    per_class = pl.DataFrame(
        {
            "class_index": [0, 1],
            "wnid": ["n01440764", "n01443537"],
            "name": ["tench", "goldfish"],
            "images": [2, 2],
            "texts": [4, 3],
            "kept": [1, 3],
            "kept_ratio": [0.25, 1.0],
            "images_with_text": [1, 2],
            "dropped_other_class": [2, 0],
            "dropped_no_class": [1, 0],
            "dropped_junk": [0, 0],
            "dropped_below_threshold": [0, 0],
        }
    )
    summary = {
        "run_id": "r",
        "policy": Policy().as_dict(),
        "scorer": "ensemble",
        "dropped_by_reason": {"another class": 2, "fits no class": 1},
        "thresholds": {"mode": "relative", "classes": 2, "mean_threshold": 0.4},
    }
    html = report.curation_report_html(
        summary, p_true=np.array([0.9, 0.1]), kept=np.array([True, False]), per_class=per_class
    )
    assert "Why texts were dropped" in html and "fits no class" in html and "dropped_other_class" in html
    assert "Relative policy" in html
    md = report.curation_report_markdown(
        summary, p_true=np.array([0.9, 0.1]), kept=np.array([True, False]), per_class=per_class
    )
    assert "another class" in md and "dropped_no_class" in md


def test_kept_baseline_hands_one_model_from_pass_to_pass_and_notices_a_retrained_file(tmp_path):
    import os

    from tasks.curate.scorers import KeptBaseline, load_scorer
    from tasks.model.baseline import save_baseline, train_baseline
    from tests.unit.test_classifier import LABELS, TEXTS, WNIDS

    for name in ("a", "b"):
        save_baseline(train_baseline(TEXTS, LABELS, classes=WNIDS), tmp_path / name)
    ref_a, ref_b = (
        ModelRef(f"m-{n}", "baseline", 0, 2, 0, str(tmp_path / n), 1, "run", "tfidf-linear")
        for n in ("a", "b")
    )
    kept = KeptBaseline()
    first = load_scorer(ref_a, kept=kept)
    assert load_scorer(ref_a, kept=kept) is first and kept.path == str(tmp_path / "a")
    assert load_scorer(ref_a) is not first  # without a hand-over every load reads the file
    other = load_scorer(ref_b, kept=kept)  # one kept at a time: loading b lets a go
    assert kept.path == str(tmp_path / "b") and load_scorer(ref_a, kept=kept) is not first
    file = tmp_path / "a" / "model.joblib"
    again = load_scorer(ref_a, kept=kept)
    os.utime(file, ns=(file.stat().st_atime_ns, file.stat().st_mtime_ns + 1_000_000))
    assert load_scorer(ref_a, kept=kept) is not again  # a retrained file is read anew
    kept.clear()
    assert kept.path is None and other.labels == WNIDS
