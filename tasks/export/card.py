"""The dataset card (`README.md`) of an export: contents, splits, features, text sources and their
licences, the curation that kept the texts, provenance and citation."""

from __future__ import annotations

import polars as pl

from tasks.export.formats import ExportResult
from tasks.export.options import PARQUET_DATA, Options
from tasks.export.read import CuratedData

FEATURES = {
    "image_id": "the image's file stem in ImageNet, e.g. `n01440764_10026`",
    "image": "the image, JPEG bytes (a few non-JPEG ImageNet files re-encoded)",
    "label": "ImageNet-1k class index (0..999, the standard order)",
    "wnid": "WordNet id of the class",
    "class_name": "the class's first WordNet lemma",
    "split": "`train` or `validation`",
    "width": "image width in pixels",
    "height": "image height in pixels",
    "caption": "the best kept image text, else `a photo of a <class name>`",
    "caption_source": "`image-text` or `class-name`: where the caption came from",
    "texts": "the kept image texts, best first: text_id, source, field, text, p_true",
    "class_texts": "descriptions of the class: source, text, url",
}
# Where each kind of text comes from and under which terms it may be used.
TEXT_LICENCES = {
    "imagenet-captions": (
        "Flickr titles, descriptions and tags of the ImageNet photos, as collected by ImageNet-Captions "
        "(Fang et al., 2022)",
        "written by the photos' Flickr owners; each photo's own terms apply; research use",
    ),
    "flickr": (
        "Flickr API (`flickr.photos.getInfo`): title, description and tags of the photo",
        "written by the photo's owner; Flickr API Terms of Use and the photo's own licence apply",
    ),
    "embedded": (
        "metadata embedded in the ImageNet image files (EXIF/IPTC/XMP)",
        "ImageNet terms of access (non-commercial research and education)",
    ),
    "wordnet": ("WordNet 3.0 glosses and lemmas (Princeton University)", "WordNet 3.0 licence (permissive)"),
    "wikipedia": (
        "Wikipedia page summaries (REST API), each with its page URL",
        "CC BY-SA 4.0; attribute with the page URL in `url`",
    ),
}
CITATION = """@article{dashenkov2025extending,
  title   = {Extending the ImageNet dataset for multimodal text and image learning},
  author  = {Dashenkov, Dmytro and Smelyakov, Kirill},
  journal = {Innovative Technologies and Scientific Solutions for Industries},
  number  = {1},
  year    = {2025},
  doi     = {10.30837/2522-9818.2025.1.020}
}"""


def _fmt(value) -> str:
    if value is None:
        return "not recorded"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _licence(source: str) -> tuple[str, str]:
    if source in TEXT_LICENCES:
        return TEXT_LICENCES[source]
    if source.startswith("file:"):
        return (
            f"the description file `{source[5:]}` given to `imtext harvest classes`",
            "as its provider states",
        )
    return (f"`{source}`", "unknown: check with whoever supplied it")


def _size_category(n: int) -> str:
    for bound, label in (
        (1_000, "n<1K"),
        (10_000, "1K<n<10K"),
        (100_000, "10K<n<100K"),
        (1_000_000, "100K<n<1M"),
    ):
        if n < bound:
            return label
    return "1M<n<10M"


def _card_yaml(fmt: str, total: int, splits: dict) -> list[str]:
    lines = [
        "---",
        "license: other",
        "license_name: imagenet-and-per-source-terms",
        "language:",
        "- en",
        "task_categories:",
        "- image-classification",
        "- image-to-text",
        "- text-classification",
        "tags:",
        "- imagenet",
        "- imtext",
        "pretty_name: ImageNet-1k with curated image texts (imtext)",
        "size_categories:",
        f"- {_size_category(total)}",
    ]
    if fmt == "parquet" and splits:
        lines += ["configs:", "- config_name: default", "  data_files:"]
        for split in splits:
            lines += [f"  - split: {split}", f"    path: {PARQUET_DATA}/{split}-*.parquet"]
    return [*lines, "---"]


def _how_to_load(fmt: str, splits: dict) -> list[str]:
    if fmt == "parquet":
        code = [
            "from datasets import load_dataset",
            'ds = load_dataset("parquet", data_dir="<this folder>")   # DatasetDict: ' + ", ".join(splits),
            'ds["train"].features["label"].int2str(0)',
        ]
    elif fmt == "hf":
        code = ["from datasets import load_from_disk", 'ds = load_from_disk("<this folder>")   # DatasetDict']
    else:
        first = next(iter(splits.values()), {}).get("pattern", "train/shard-{000000..000000}.tar")
        code = [
            "import webdataset as wds",
            f'ds = wds.WebDataset("<this folder>/{first}", shardshuffle=100)'
            '.shuffle(1000).decode("pil").to_tuple("jpg", "cls", "txt")',
        ]
    return ["```python", *code, "```"]


def dataset_card(data: CuratedData, result: ExportResult, options: Options, created_at: str) -> str:
    """The export's README.md: contents, splits, features, text sources and licences, curation, provenance."""
    cur = data.curation
    total = result.images
    lines = _card_yaml(result.format, total, result.splits)
    lines += [
        "",
        "# ImageNet-1k with curated image texts",
        "",
        f"{total:,} ImageNet-1k images of {result.classes:,} classes, each with its class label, descriptions "
        f"of its class and the descriptions of the image itself that survived curation ({result.texts:,} texts"
        f" in all), exported by imtext as **{result.format}** on {created_at}. "
        + (
            "Only images with at least one kept text are included."
            if options.only_with_text
            else "Every ingested image is included, with or without kept texts."
        ),
        "",
        "## How to load",
        "",
        *_how_to_load(result.format, result.splits),
        "",
        "## Splits",
        "",
        "| split | images | kept texts | files |",
        "|---|---:|---:|---:|",
        *(f"| {s} | {i['images']:,} | {i['texts']:,} | {i['files']:,} |" for s, i in result.splits.items()),
        "",
        f"`validation` is ImageNet's `val`. Within a split the samples are shuffled with seed {options.seed}, "
        f"the same order in every format; files hold at most {options.shard_size:,} samples "
        f"and about {options.shard_max_bytes / 2**20:,.0f} MB.",
        "",
        "## Features",
        "",
        "| feature | what it is |",
        "|---|---|",
        *(f"| `{k}` | {v} |" for k, v in FEATURES.items()),
        "",
        "`label` names are the first WordNet lemma of each class in index order; the two names two classes "
        "share (`crane`, `maillot`) carry their wnid.",
    ]
    if result.format == "webdataset":
        lines += [
            "",
            "In the WebDataset shards a sample is `<image_id>.jpg` (the image), `.cls` (the label), `.txt` "
            "(the caption) and `.json` (every other feature).",
        ]
    image_sources = data.texts.filter(pl.col("image_id").is_in(data.images["image_id"].implode()))
    text_counts = image_sources.group_by("source").len().sort("source").rows()
    class_counts = (
        data.class_texts.filter(pl.col("wnid").is_in(data.wnids))
        .group_by("source")
        .len()
        .sort("source")
        .rows()
    )
    lines += [
        "",
        "## Sources and licences",
        "",
        "Images: ImageNet-1k (ILSVRC 2012), under the ImageNet terms of access (non-commercial research and "
        "education). Texts:",
        "",
        "| kind | source | texts | where from | terms |",
        "|---|---|---:|---|---|",
    ]
    for kind, counts in (("image text", text_counts), ("class text", class_counts)):
        for source, n in counts:
            origin, terms = _licence(source)
            lines.append(f"| {kind} | `{source}` | {n:,} | {origin} | {terms} |")
    policy = cur.get("policy") or {}
    labels = (cur.get("metrics") or {}).get("labels") if isinstance(cur.get("metrics"), dict) else None
    lines += [
        "",
        "## Curation",
        "",
        "Each image text was scored by a text→class classifier that never saw it in training (out-of-fold): "
        "`p_true` is the probability it gives the image's own class. A text is kept by this policy: "
        + ", ".join(f"`{k}` = {_fmt(v)}" for k, v in policy.items())
        + ".",
        "",
        f"Curation run `{cur['run_id']}` with the `{cur['scorer']}` scorer ({cur.get('scorer_reason') or 'chosen'})"
        f" kept {_fmt(cur.get('kept'))} of {_fmt(cur.get('texts'))} texts.",
        "",
    ]
    if labels:
        lines += [
            f"Measured on {_fmt(labels.get('labelled'))} texts labelled relevant or not:",
            "",
            "| decision | precision | recall |",
            "|---|---:|---:|",
            f"| keep | {_fmt(labels.get('keep_precision'))} | {_fmt(labels.get('keep_recall'))} |",
            f"| drop | {_fmt(labels.get('drop_precision', labels.get('precision')))} | "
            f"{_fmt(labels.get('drop_recall', labels.get('recall')))} |",
        ]
    else:
        lines.append(
            "Precision and recall were not measured for this curation (no relevance labels were given to "
            "`imtext curate --labels`)."
        )
    lines += [
        "",
        "## Provenance",
        "",
        f"- warehouse snapshot: {data.snapshot} (curation decided at snapshot {_fmt(cur.get('snapshot'))})",
        f"- training run: `{_fmt(cur.get('training_run'))}`",
        "- scorers:",
    ]
    for s in data.scorers:
        held_out = s.get("metrics") or {}
        shown = ", ".join(f"{k} {_fmt(v)}" for k, v in held_out.items() if isinstance(v, int | float))
        base = s.get("base_model") or (f"ensemble of {', '.join(s['members'])}" if s.get("members") else "")
        lines.append(
            f"  - `{s['model_id']}` ({s.get('kind') or 'model'}, fold {s.get('fold')}, {s.get('role') or ''}"
            f"{'; ' + base if base else ''}{'; held-out ' + shown if shown else ''})"
        )
    if not data.scorers:
        lines.extend(f"  - `{m}`" for m in cur.get("model_ids") or [])
    lines += [
        "- `manifest.json` beside this card lists every file with its size and SHA-256.",
        "",
        "## Citation",
        "",
        'The dataset follows Dashenkov & Smelyakov (2025), "Extending the ImageNet dataset for multimodal '
        'text and image learning":',
        "",
        "```bibtex",
        CITATION,
        "```",
        "",
    ]
    return "\n".join(lines)
