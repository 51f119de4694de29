"""Grouped cross-fitting folds: planted twins never straddle folds."""

from __future__ import annotations

import polars as pl

from tasks.model.folds import fold_of, group_folds, image_groups, twin_key


def test_twin_key_ignores_case_punctuation_and_spacing_but_not_short_words():
    assert twin_key("My dog at the BEACH!!") == twin_key("my  dog, at the beach")
    assert twin_key("dog") is None and twin_key("") is None and twin_key(None) is None


def test_planted_twins_share_a_fold_for_every_fold_count_and_seed():
    pasted = "Photos from our summer holiday in Norway, 2007"
    rows = []
    for i in range(200):
        rows.append((f"n01440764_{i}", f"a unique description number {i} of a fish"))
    twins = [f"n01440764_{i}" for i in range(0, 200, 20)] + ["n02085620_7", "n02085620_9"]
    for image_id in twins:
        rows.append((image_id, pasted if image_id != twins[-1] else pasted.upper() + " ."))
    # a chain: 0-1 share one text, 1-2 another, so 0 and 2 are in one group too
    rows += [("n01443537_0", "the same words pasted here"), ("n01443537_1", "the same words pasted here")]
    rows += [("n01443537_1", "another pasted caption text"), ("n01443537_2", "another pasted caption text")]
    frame = pl.DataFrame(rows, schema={"image_id": pl.String, "text": pl.String}, orient="row")
    for folds in (2, 3, 5):
        for seed in (0, 1, 7):
            out = group_folds(frame, folds, seed)
            fold = dict(zip(out["image_id"], out["fold"], strict=True))
            assert len({fold[i] for i in twins}) == 1
            assert len({fold[f"n01443537_{i}"] for i in range(3)}) == 1
            # an image without twins keeps its own hash fold
            assert fold["n01440764_1"] == fold_of("n01440764_1", folds, seed)
    groups = image_groups(frame["image_id"].to_list(), frame["text"].to_list())
    assert groups["n02085620_9"] == min(twins) and groups["n01443537_2"] == "n01443537_0"


def test_one_uploader_is_one_group_when_known():
    frame = pl.DataFrame(
        {
            "image_id": ["x_1", "x_2", "x_3"],
            "text": ["short", "other", "more"],
            "owner": ["alice", None, "alice"],
        }
    )
    groups = image_groups(frame["image_id"].to_list(), frame["text"].to_list(), frame["owner"].to_list())
    assert groups == {"x_1": "x_1", "x_2": "x_2", "x_3": "x_1"}


def test_boilerplate_under_many_images_joins_no_group():
    from tasks.model.folds import MAX_TWIN_IMAGES

    many = MAX_TWIN_IMAGES + 1
    rows = [(f"n01440764_{i}", "All rights reserved, do not use without permission") for i in range(many)]
    rows += [(f"n02085620_{i}", "Our weekend trip to the lake house") for i in range(MAX_TWIN_IMAGES)]
    frame = pl.DataFrame(rows, schema={"image_id": pl.String, "text": pl.String}, orient="row")
    groups = image_groups(frame["image_id"].to_list(), frame["text"].to_list())
    # pasted under more than MAX_TWIN_IMAGES images: every image stays its own group
    assert all(groups[f"n01440764_{i}"] == f"n01440764_{i}" for i in range(many))
    # under exactly MAX_TWIN_IMAGES images it is still a pasted description: one group
    assert {groups[f"n02085620_{i}"] for i in range(MAX_TWIN_IMAGES)} == {"n02085620_0"}
    out = group_folds(frame, 2)
    counts = out.group_by("fold").len()["len"].to_list()
    assert min(counts) > many // 4  # the boilerplate images spread over both folds


def test_a_chain_of_shared_texts_stops_at_the_group_cap_whatever_the_row_order():
    import random

    from tasks.model.folds import MAX_GROUP_IMAGES

    n = MAX_GROUP_IMAGES + 150
    # image i and i+1 share a text: one chain through every image
    rows = [(f"img_{i:05d}", f"link number {i} between two photos") for i in range(n - 1)]
    rows += [(f"img_{i + 1:05d}", f"link number {i} between two photos") for i in range(n - 1)]
    shuffled = rows[:]
    random.Random(3).shuffle(shuffled)
    groups = image_groups([r[0] for r in rows], [r[1] for r in rows])
    sizes: dict[str, int] = {}
    for key in groups.values():
        sizes[key] = sizes.get(key, 0) + 1
    assert max(sizes.values()) == MAX_GROUP_IMAGES and sum(sizes.values()) == n
    assert image_groups([r[0] for r in shuffled], [r[1] for r in shuffled]) == groups
