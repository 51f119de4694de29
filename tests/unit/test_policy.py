"""The relative keep/drop policy on inline scores: per-class thresholds, reasons, overrides."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.errors import InputError
from tasks.policy import (
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
    s["p_true"][0], s["pred_wnid"][0], s["pred_p"][0] = 0.05, "b", 0.06  # nothing confident anywhere
    kept, reasons, _ = decide(Policy(prior_texts=0), **s)
    assert not kept[0] and reasons[0] == REASON_NONE


def test_overrides_switch_to_the_fixed_rule_and_bad_values_are_refused():
    assert Policy().mode == "relative"
    assert Policy(min_p_true=0.3).mode == "fixed" and Policy(top_k=5).mode == "fixed"
    for bad in ({"fit_ratio": 1.5}, {"prior_texts": -1}, {"min_p_true": 2.0}):
        with pytest.raises(InputError):
            Policy(**bad)
    assert reason_kind("another class n01440764") == "another class" and reason_kind(None) is None


def test_evidence_mask_keeps_new_text_scores_out_of_the_thresholds():
    s = scenario()
    evidence = np.array([True] * 10)
    evidence[:3] = False  # class a's confident texts were scored by the model on everything
    _, _, used = decide(Policy(prior_texts=0), **s, evidence=evidence)
    assert used["thresholds"]["a"] == pytest.approx(0.02)
