"""The relative keep/drop policy on inline scores: per-class thresholds, reasons, overrides."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.common.errors import InputError
from tasks.curate.policy import (
    REASON_BELOW,
    REASON_JUNK,
    REASON_NONE,
    Policy,
    class_thresholds,
    decide,
    reason_kind,
)


def test_thresholds_are_per_class_means_shrunk_towards_the_overall_mean():
    wnids = ["a"] * 4 + ["b"] * 4
    p = [0.9, 0.9, 0.9, 0.9, 0.1, 0.1, 0.1, 0.1]
    raw, overall = class_thresholds(wnids, p, prior_texts=0)
    assert raw == pytest.approx({"a": 0.9, "b": 0.1}) and overall == pytest.approx(0.5)
    shrunk, _ = class_thresholds(wnids, p, prior_texts=4)
    assert shrunk == pytest.approx({"a": 0.7, "b": 0.3})
    # texts that are not evidence (junk, or scored by a model that saw them) set nothing
    masked, _ = class_thresholds(wnids, p, usable=[True] * 4 + [False] * 4, prior_texts=0)
    assert masked == pytest.approx({"a": 0.9})


def scenario():
    """Class a: a confident model; class b: a hesitant one (a fixed 0.2 would drop most of b)."""
    wnid = ["a", "a", "a", "a", "b", "b", "b", "b", "b", "a"]
    p_true = [0.95, 0.9, 0.92, 0.02, 0.15, 0.12, 0.14, 0.13, 0.01, 0.05]
    pred = ["a", "a", "a", "b", "b", "b", "b", "b", "a", "b"]
    pred_p = [0.95, 0.9, 0.92, 0.6, 0.15, 0.12, 0.14, 0.13, 0.97, 0.3]
    junk = [False] * 9 + [True]
    return {
        "wnid": wnid,
        "p_true": p_true,
        "true_rank": [1] * 10,
        "pred_wnid": pred,
        "pred_p": pred_p,
        "junk": junk,
    }


def test_relative_policy_keeps_a_hesitant_class_and_names_every_drop():
    kept, reasons, used = decide(Policy(prior_texts=0), **scenario())
    # class b's texts at 0.12-0.15 are kept: its own threshold is low, not a global 0.2
    assert kept.tolist() == [True, True, True, False, True, True, True, True, False, False]
    assert reasons[3] == "another class b"  # confidently class b, its own class a far below
    assert reasons[8] == "another class a"
    assert reasons[9] == REASON_JUNK
    assert all(r is None for r, k in zip(reasons, kept, strict=True) if k)
    assert used["mode"] == "relative" and set(used["thresholds"]) == {"a", "b"}
    fixed, fixed_reasons, _ = decide(Policy(min_p_true=0.2), **scenario())
    assert fixed[4:8].tolist() == [False] * 4 and fixed_reasons[4] == REASON_BELOW


def test_a_text_that_fits_no_class_is_dropped_as_such():
    s = scenario()
    s["p_true"][0], s["pred_wnid"][0], s["pred_p"][0] = 0.03, "b", 0.04  # nothing confident anywhere
    kept, reasons, _ = decide(Policy(prior_texts=0), **s)
    assert not kept[0] and reasons[0] == REASON_NONE


def test_another_class_must_lead_by_the_margin():
    s = scenario()
    # text 3 of class a: class b leads 0.15 to 0.10, both near their thresholds: a hesitant scorer,
    # not evidence of another class; the same text with b at 0.90 is another class's description
    s["p_true"][3], s["pred_p"][3] = 0.10, 0.15
    policy = Policy(prior_texts=0, fit_ratio=0.1, other_margin=4.0)
    kept, reasons, used = decide(policy, **s)
    assert kept[3] and reasons[3] is None
    assert (used["fit_ratio"], used["other_margin"]) == (0.1, 4.0)
    s["pred_p"][3] = 0.90
    kept, reasons, _ = decide(policy, **s)
    assert not kept[3] and reasons[3] == "another class b"
    s["pred_p"][3] = 0.15
    kept, reasons, _ = decide(Policy(prior_texts=0, fit_ratio=0.1, other_margin=1.0), **s)
    assert not kept[3] and reasons[3] == "another class b"  # without a margin, leading is enough


def test_both_rules_scale_with_the_strength_of_the_scorer():
    """A weak scorer (low mean out-of-fold p_true) demands a larger lead and a lower floor."""
    policy = Policy()
    strong_fit, strong_margin = policy.scaled(0.8)
    weak_fit, weak_margin = policy.scaled(0.25)
    assert weak_fit < strong_fit and weak_margin > strong_margin >= 1.0
    assert strong_fit == pytest.approx(policy.fit_scale * 0.8)
    assert weak_margin == pytest.approx(0.25**-policy.margin_power)
    # the same relevant-looking text (own class 0.05, a neighbour 0.15) among weak scores is kept,
    # among strong scores (where its class's texts get ~0.9) it is another class's
    wnid = ["a"] * 5 + ["b"] * 5
    weak = dict(
        wnid=wnid,
        p_true=[0.05, 0.3, 0.25, 0.2, 0.3, 0.3, 0.25, 0.2, 0.3, 0.25],
        true_rank=[2] + [1] * 9,
        pred_wnid=["b"] + wnid[1:],
        pred_p=[0.15, 0.3, 0.25, 0.2, 0.3, 0.3, 0.25, 0.2, 0.3, 0.25],
        junk=[False] * 10,
    )
    kept, reasons, _ = decide(Policy(prior_texts=0), **weak)
    assert kept[0] and reasons[0] is None
    strong = dict(weak, p_true=[0.05] + [0.9] * 9, pred_p=[0.9] + [0.9] * 9)
    kept, reasons, _ = decide(Policy(prior_texts=0), **strong)
    assert not kept[0] and reasons[0] == "another class b"


def test_overrides_switch_to_the_fixed_rule_and_bad_values_are_refused():
    assert Policy().mode == "relative"
    assert Policy(min_p_true=0.3).mode == "fixed" and Policy(top_k=5).mode == "fixed"
    for bad in (
        {"fit_ratio": 1.5},
        {"prior_texts": -1},
        {"min_p_true": 2.0},
        {"other_margin": 0.5},
        {"fit_scale": 2.0},
        {"margin_power": -1.0},
    ):
        with pytest.raises(InputError):
            Policy(**bad)
    assert reason_kind("another class n01440764") == "another class" and reason_kind(None) is None


def test_evidence_mask_keeps_new_text_scores_out_of_the_thresholds():
    s = scenario()
    evidence = np.array([True] * 10)
    evidence[:3] = False  # class a's confident texts were scored by the model on everything
    _, _, used = decide(Policy(prior_texts=0), **s, evidence=evidence)
    assert used["thresholds"]["a"] == pytest.approx(0.02)
