"""The committed relevance sets (bench/data/relevance/) are well formed and keep their promises."""

from __future__ import annotations

import importlib.util
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("relevance_sets", ROOT / "bench" / "relevance_sets.py")
rs = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("relevance_sets", rs)  # dataclasses look their module up there
_spec.loader.exec_module(rs)

COLUMNS = {"image_id", "wnid", "text", "relevant", "kind", "source_wnid", "how", "mix", "dup_group"}


def _catalog_names() -> dict[str, list[str]]:
    names = {}
    for line in rs.CATALOG.read_text(encoding="utf-8").splitlines():
        if line.startswith("#") or line.startswith("class_index"):
            continue
        _, wnid, name, lemmas, _ = line.split("\t")
        names[wnid] = [name, *[x.strip() for x in lemmas.split(",")]]
    return names


@pytest.fixture(scope="module")
def sets() -> dict[str, tuple[dict, list[dict]]]:
    return {name: rs.load_set(rs.set_path(name)) for name in rs.ALL_SETS}


def test_every_set_has_a_header_with_provenance(sets):
    for name, (header, rows) in sets.items():
        assert header["set"] == name
        for key in ("source", "licence", "citation", "how", "built_by", "rates", "classes"):
            assert header[key], (name, key)
        assert "CuPL" in header["source"] and "MIT" in header["licence"]
        assert header["texts"] == len(rows)
        assert {r["wnid"] for r in rows} == set(header["classes"])


def test_rows_are_consistent(sets):
    for name, (_, rows) in sets.items():
        assert len({r["image_id"] for r in rows}) == len(rows), name
        for r in rows:
            assert set(r) == COLUMNS, name
            assert r["image_id"].startswith(r["wnid"] + "_")
            assert r["text"].strip()
            assert r["relevant"] == (r["kind"] == "relevant")
            if r["kind"] == "relevant":
                assert r["source_wnid"] == r["wnid"]
            elif r["kind"] == "other-class":
                assert r["source_wnid"] not in (None, r["wnid"]) and r["mix"] in rs.OTHER_MIX
            else:
                assert r["kind"] == "junk" and r["source_wnid"] is None and r["how"] == "generated"


def test_no_unnamed_text_names_its_class(sets):
    ours = _catalog_names()
    for name in ("unnamed-10", "unnamed-70", "dev-unnamed"):
        header, rows = sets[name]
        tokens = {w: rs.name_tokens([*ours[w], *header["class_names"][w]]) for w in header["class_names"]}
        for r in rows:
            if r["kind"] == "junk":
                continue
            assert r["how"] in ("filtered", "masked")
            assert not rs.names_class(r["text"], tokens[r["wnid"]]), (name, r)
            assert not rs.names_class(r["text"], tokens[r["source_wnid"]]), (name, r)


def test_named_sets_mostly_name_their_class(sets):
    ours = _catalog_names()
    for name in ("named-10", "named-70", "dev-named"):
        header, rows = sets[name]
        relevant = [r for r in rows if r["relevant"]]
        naming = sum(
            rs.names_class(r["text"], rs.name_tokens([*ours[r["wnid"]], *header["class_names"][r["wnid"]]]))
            for r in relevant
        )
        assert naming / len(relevant) > 0.9, name


def test_dev_and_eval_classes_are_disjoint(sets):
    def touched(names):
        return {w for n in names for r in sets[n][1] for w in (r["wnid"], r["source_wnid"]) if w is not None}

    dev = {w for n in rs.DEV_SETS for w in sets[n][0]["classes"]}
    evaluation = {w for n in rs.EVAL_SETS for w in sets[n][0]["classes"]}
    assert dev and evaluation and dev.isdisjoint(evaluation)
    assert touched(rs.DEV_SETS).isdisjoint(touched(rs.EVAL_SETS))
    assert all(sets[n][0]["purpose"].startswith("tuning") for n in rs.DEV_SETS)


def test_rates_are_as_documented(sets):
    for name, (header, rows) in sets.items():
        kinds = Counter(r["kind"] for r in rows)
        assert kinds["relevant"] / len(rows) == pytest.approx(rs.RELEVANT_RATE, abs=0.01), name
        assert kinds["other-class"] / len(rows) == pytest.approx(rs.OTHER_RATE, abs=0.01), name
        assert kinds["junk"] / len(rows) == pytest.approx(1 - rs.RELEVANT_RATE - rs.OTHER_RATE, abs=0.01)
        assert header["rates"]["relevant"] == round(kinds["relevant"] / len(rows), 4)
        mix = Counter(r["mix"] for r in rows if r["kind"] == "other-class")
        for part, share in rs.OTHER_MIX.items():
            assert mix[part] / kinds["other-class"] == pytest.approx(share, abs=0.03), (name, part)


def test_planted_duplicates_are_present_and_marked(sets):
    for name, (header, rows) in sets.items():
        groups: dict[str, list[dict]] = {}
        for r in rows:
            if r["dup_group"]:
                groups.setdefault(r["dup_group"], []).append(r)
        assert groups and sorted(groups) == header["duplicate_groups"], name
        for members in groups.values():
            assert len(members) >= 2
            assert len({(r["wnid"], r["text"]) for r in members}) == 1 and members[0]["relevant"]
        # apart from the planted groups, no text repeats within one class
        plain = Counter((r["wnid"], r["text"]) for r in rows if not r["dup_group"] and r["kind"] != "junk")
        assert max(plain.values()) == 1, name


def test_masking_replaces_names_and_plurals():
    names = ["tench", "Tinca tinca"]
    assert rs.mask_names("Tench are fish; the tenches (Tinca tinca) swim.", names) == (
        "Thing are fish; the things (Thing) swim."
    )
    assert not rs.names_class("A thing in a lake.", rs.name_tokens(names))
    assert rs.names_class("Two tenches.", rs.name_tokens(names))
