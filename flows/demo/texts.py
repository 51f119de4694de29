"""The demo's harvest inputs, generated from the sample's (image_id, wnid) pairs and the class catalog.

`write_harvest_inputs(pairs, out_dir)` writes:

- `imagenet_captions.json`: ImageNet-Captions records for part of the images (and a few for images
  that are not in the sample, which the import counts as not ingested);
- `fall11_urls.txt`: `image_id TAB url` for the other images: Flickr static URLs, a few deleted
  photos, a few "photo unavailable" placeholder URLs and a few URLs off Flickr;
- `flickr_getinfo.json` and `wikipedia_summaries.json`: what the stand-in servers
  (`flows.demo.servers.serve_apis(out_dir)`) answer, including a disambiguation page, a redirect
  and classes without any page;
- `class_descriptions.json`: CuPL-style descriptions of the sample's classes (generated; the image
  descriptions use real CuPL sentences from `cupl_sentences.json` instead, so the two never overlap);
- `labels.jsonl`: one `{text_id, image_id, source, field, text, relevant, junk}` per image text the
  harvest will store, `text` as stored (cleaned), so later flows can measure their filtering.

Texts mix relevant descriptions (the class's name or a synonym, its gloss) with irrelevant ones
(camera file names, other classes, holiday chatter), with HTML and entities to clean.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from flows.demo.servers import FLICKR_FILE, WIKIPEDIA_FILE
from tasks.harvest.captions import caption_rows
from tasks.harvest.flickr import SOURCE as FLICKR
from tasks.harvest.flickr import photo_texts
from tasks.harvest.text import prepare_image_texts

API_KEY = "demo-flickr-key-0123456789abcdef"
# Real descriptions of the demo's classes (CuPL, MIT; see flows/demo/build_descriptions.py).
_SENTENCES: dict[str, list[str]] = json.loads(
    (Path(__file__).with_name("cupl_sentences.json")).read_text(encoding="utf-8")
)["sentences"]

_PLACES = ["lake", "zoo", "market", "beach", "park", "farm", "harbour", "garden", "museum", "forest"]
_WHEN = ["last summer", "this morning", "on Sunday", "in 2008", "during our trip", "yesterday"]
_HOLIDAY = [
    "Summer vacation 2007 with the whole family",
    "Day 3 of our road trip through Portugal",
    "Happy birthday, grandma!",
    "Christmas morning at my parents' house",
    "Weekend in Barcelona, great weather",
    "Our flight was delayed again...",
    "Best friends forever",
    "New Year's Eve party 2009",
]
_CAMERA = ["IMG_{n:04d}", "DSC{n:05d}.JPG", "P101{n:04d}", "DSCN{n:04d}", "100_{n:04d}", "IMG_{n:04d}.jpg"]
_NOISE_TAGS = [
    "vacation",
    "canon",
    "nikon",
    "2008",
    "family",
    "eos",
    "summer",
    "holiday",
    "friends",
    "travel",
]


@dataclass
class HarvestInputs:
    """Paths of the generated files, the Flickr key the stand-in accepts, and what was generated."""

    root: Path
    captions: Path
    flickr_urls: Path
    descriptions: Path
    labels: Path
    api_key: str = API_KEY
    counts: dict = field(default_factory=dict)


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _lemmas(row: dict) -> list[str]:
    return [n.strip() for n in (row["lemmas"] or row["name"]).split(",") if n.strip()]


class _Writer:
    """Random texts about a class, or about nothing in particular."""

    def __init__(self, rng: random.Random, classes: dict[str, dict], others: list[dict]):
        self.rng = rng
        self.classes = classes
        self.others = others
        self.serial = rng.randrange(1000, 8000)

    def camera(self) -> str:
        self.serial += self.rng.randrange(1, 40)
        return self.rng.choice(_CAMERA).format(n=self.serial)

    def other_class(self, wnid: str) -> str:
        other = self.rng.choice([c for c in self.others if c["wnid"] != wnid])
        name = other["name"]
        return self.rng.choice(
            [
                f"{name.capitalize()} in the garden",
                f"Look at this {name}!",
                f"The {name} at the {self.rng.choice(_PLACES)}",
            ]
        )

    def title(self, wnid: str) -> tuple[str, bool]:
        row = self.classes[wnid]
        lemmas = _lemmas(row)
        roll = self.rng.random()
        if roll < 0.45:
            name = self.rng.choice(lemmas)  # sometimes a synonym rather than the name
            text = self.rng.choice(
                [
                    f"{name.capitalize()}",
                    f"My {name}",
                    f"{name.capitalize()} at the {self.rng.choice(_PLACES)}",
                    f"{_article(name).capitalize()} {name} {self.rng.choice(_WHEN)}",
                ]
            )
            return text, True
        if roll < 0.7:
            return self.camera(), False
        if roll < 0.85:
            return self.rng.choice(_HOLIDAY), False
        return self.other_class(wnid), False

    def description(self, wnid: str) -> tuple[str | None, bool]:
        """A description as Flickr users write them: mostly real sentences about the photo's class
        (CuPL's, see `cupl_sentences.json`), sometimes about another class, holiday chatter or nothing."""
        roll = self.rng.random()
        if roll < 0.45:
            sentence = self.rng.choice(_SENTENCES.get(wnid) or [self.classes[wnid]["gloss"]])
            text = self.rng.choice(
                [
                    sentence,
                    f"{sentence} Taken {self.rng.choice(_WHEN)}.",
                    f"<p>{sentence}</p>",
                    f'{sentence} <a href="http://www.flickr.com/photos/someone/sets/7215/">more in my set</a>',
                ]
            )
            return text, True
        if roll < 0.55:
            return None, False
        if roll < 0.75:
            return self.rng.choice(
                [
                    f"{self.rng.choice(_HOLIDAY)}. <br/>Shot with my new camera &amp; lens",
                    self.rng.choice(_HOLIDAY),
                ]
            ), False
        other = self.rng.choice([w for w in _SENTENCES if w != wnid] or [wnid])
        if other == wnid:
            return self.other_class(wnid) + ". " + self.rng.choice(_HOLIDAY), False
        return self.rng.choice(_SENTENCES[other]), False

    def tags(self, wnid: str) -> tuple[list[str], bool]:
        relevant = self.rng.random() < 0.5
        tags = self.rng.sample(_NOISE_TAGS, self.rng.randrange(1, 4))
        if relevant:
            tags.insert(self.rng.randrange(len(tags) + 1), self.rng.choice(_lemmas(self.classes[wnid])))
        return tags, relevant


def _wikipedia(rng: random.Random, rows: list[dict]) -> tuple[dict, dict, dict]:
    """Summaries for the classes; the first class with two names has a disambiguation page under its
    first name, the second a redirect, and the last class has no page at all."""
    pages: dict[str, dict] = {}
    redirects: dict[str, str] = {}
    roles: dict[str, str] = {}
    multi = [r for r in rows if len(_lemmas(r)) >= 2]
    disambiguation = multi[0]["wnid"] if multi else None
    redirect = multi[1]["wnid"] if len(multi) > 1 else None
    missing = (
        rows[-1]["wnid"] if len(rows) > 2 and rows[-1]["wnid"] not in (disambiguation, redirect) else None
    )
    for row in rows:
        names = _lemmas(row)
        if row["wnid"] == missing:
            roles[row["wnid"]] = "missing"
            continue
        title = names[0][:1].upper() + names[0][1:]
        if row["wnid"] == disambiguation:
            pages[title] = _summary(title, f"{title} may refer to:", "disambiguation")
            title = names[1][:1].upper() + names[1][1:]
            roles[row["wnid"]] = "disambiguation"
        elif row["wnid"] == redirect:
            target = names[1][:1].upper() + names[1][1:]
            redirects[title] = target
            title = target
            roles[row["wnid"]] = "redirect"
        else:
            roles[row["wnid"]] = "standard"
        others = [n for n in names if n.lower() != title.lower()]
        also = f" (also {', '.join(others[:2])})" if others else ""
        extract = (
            f"The {title.lower() if title.islower() else title}{also} is {_article(row['gloss'])} {row['gloss']}. "
            f"It is found in many places and has been described since the eighteenth century."
        )
        pages[title] = _summary(title, extract, "standard", pageid=rng.randrange(10_000, 9_000_000))
    return pages, redirects, roles


def _summary(title: str, extract: str, kind: str, pageid: int = 1) -> dict:
    slug = title.replace(" ", "_")
    return {
        "type": kind,
        "title": slug,
        "displaytitle": title,
        "namespace": {"id": 0, "text": ""},
        "titles": {"canonical": slug, "normalized": title, "display": title},
        "pageid": pageid,
        "lang": "en",
        "dir": "ltr",
        "extract": extract,
        "extract_html": f"<p>{extract}</p>",
        "content_urls": {
            "desktop": {"page": f"https://en.wikipedia.org/wiki/{slug}"},
            "mobile": {"page": f"https://en.m.wikipedia.org/wiki/{slug}"},
        },
    }


def _photo(
    rng: random.Random,
    photo_id: str,
    secret: str,
    server: str,
    farm: int,
    title: str,
    description: str | None,
    tags: list[str],
) -> dict:
    owner = f"{rng.randrange(10_000_000, 99_999_999)}@N0{rng.randrange(0, 9)}"
    return {
        "id": photo_id,
        "secret": secret,
        "server": server,
        "farm": farm,
        "dateuploaded": str(rng.randrange(1_150_000_000, 1_250_000_000)),
        "license": "0",
        "owner": {"nsid": owner, "username": f"user{rng.randrange(1000)}"},
        "title": {"_content": title},
        "description": {"_content": description or ""},
        "visibility": {"ispublic": 1, "isfriend": 0, "isfamily": 0},
        "tags": {
            "tag": [
                {
                    "id": f"{photo_id}-{i}",
                    "author": owner,
                    "raw": t,
                    "_content": t.lower().replace(" ", ""),
                    "machine_tag": 0,
                }
                for i, t in enumerate(tags)
            ]
        },
        "urls": {
            "url": [{"type": "photopage", "_content": f"https://www.flickr.com/photos/{owner}/{photo_id}/"}]
        },
        "media": "photo",
    }


def write_harvest_inputs(
    pairs: Iterable[tuple[str, str]],
    out_dir: str | Path,
    classes: pl.DataFrame | None = None,
    *,
    seed: int = 0,
    captions_share: float = 0.5,
) -> HarvestInputs:
    """Write the demo's harvest inputs for these (image_id, wnid) pairs into `out_dir` (see module doc)."""
    from warehouse.catalog import read_classes

    rng = random.Random(seed)
    catalog = classes if classes is not None else read_classes()
    pairs = sorted(set(pairs))
    wnids = sorted({w for _, w in pairs})
    by_wnid = {r["wnid"]: r for r in catalog.filter(pl.col("wnid").is_in(wnids)).iter_rows(named=True)}
    others = list(by_wnid.values()) if len(by_wnid) > 1 else catalog.head(20).to_dicts()
    writer = _Writer(rng, by_wnid, others)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    order = pairs[:]
    rng.shuffle(order)
    cut = round(len(order) * captions_share)
    caption_pairs, flickr_pairs = sorted(order[:cut]), sorted(order[cut:])

    # ImageNet-Captions records (plus a few for images the sample does not have).
    records, relevance = [], {}
    for image_id, wnid in caption_pairs:
        (title, t_rel), (desc, d_rel), (tags, g_rel) = (
            writer.title(wnid),
            writer.description(wnid),
            writer.tags(wnid),
        )
        records.append(
            {
                "filename": f"{image_id}.JPEG",
                "wnid": wnid,
                "title": title,
                "description": desc or "",
                "tags": tags,
            }
        )
        relevance[image_id] = {"title": t_rel, "description": d_rel, "tags": g_rel}
    for k, wnid in enumerate(wnids[:3]):
        records.append(
            {
                "filename": f"{wnid}_99{k:04d}.JPEG",
                "wnid": wnid,
                "title": "not in the sample",
                "description": "",
                "tags": [],
            }
        )
    (out / "imagenet_captions.json").write_text(json.dumps(records, indent=0))

    # URL list and getInfo answers.
    lines, photos = [], {}
    kinds = {"flickr": 0, "deleted": 0, "placeholder": 0, "other": 0}
    for n, (image_id, wnid) in enumerate(flickr_pairs):
        photo_id = str(rng.randrange(10**8, 4 * 10**9))
        secret = f"{rng.getrandbits(40):010x}"
        server, farm = str(rng.randrange(1000, 4000)), rng.randrange(1, 10)
        kind = "flickr"
        if len(flickr_pairs) >= 8 and n % 11 == 3:
            kind = "deleted"
        elif len(flickr_pairs) >= 8 and n % 13 == 5:
            kind = "placeholder"
        elif len(flickr_pairs) >= 8 and n % 17 == 7:
            kind = "other"
        kinds[kind] += 1
        if kind == "placeholder":
            url = rng.choice(
                [
                    "https://s.yimg.com/pw/images/en-us/photo_unavailable.png",
                    f"http://farm{farm}.static.flickr.com/{server}/photo_unavailable.gif",
                ]
            )
        elif kind == "other":
            url = f"http://www.example.org/gallery/{wnid}/{image_id}.jpg"
        else:
            url = f"http://farm{farm}.static.flickr.com/{server}/{photo_id}_{secret}.jpg"
        lines.append(f"{image_id}\t{url}")
        if kind != "flickr":
            continue
        (title, t_rel), (desc, d_rel), (tags, g_rel) = (
            writer.title(wnid),
            writer.description(wnid),
            writer.tags(wnid),
        )
        photos[photo_id] = _photo(rng, photo_id, secret, server, farm, title, desc, tags)
        relevance[image_id] = {"title": t_rel, "description": d_rel, "tags": g_rel, "_photo": photo_id}
    lines.append("n00000000_1\thttp://farm1.static.flickr.com/1/1_abcdef.jpg")  # an image not in the sample
    (out / "fall11_urls.txt").write_text("\n".join(lines) + "\n")
    (out / FLICKR_FILE).write_text(json.dumps(photos, indent=0))

    pages, redirects, roles = _wikipedia(rng, [by_wnid[w] for w in wnids])
    (out / WIKIPEDIA_FILE).write_text(json.dumps({"pages": pages, "redirects": redirects}, indent=0))

    descriptions = {}
    names = catalog["name"].to_list()
    for wnid in wnids:
        row = by_wnid[wnid]
        key = row["name"] if names.count(row["name"]) == 1 else wnid
        descriptions[key] = [
            f"A photo of {_article(row['name'])} {row['name']}, {row['gloss'].split(';')[0]}.",
            f"{_article(row['name']).capitalize()} {row['name']} is {_article(row['gloss'])} {row['gloss']}.",
        ]
    (out / "class_descriptions.json").write_text(json.dumps(descriptions, indent=1))

    # Labels: the texts exactly as the harvest will store them.
    raw_caption = caption_rows(
        pl.DataFrame(
            records[: len(caption_pairs)],
            schema={
                "filename": pl.String,
                "wnid": pl.String,
                "title": pl.String,
                "description": pl.String,
                "tags": pl.List(pl.String),
            },
        ).with_columns(pl.col("filename").str.replace(r"\.JPEG$", "").alias("image_id"))
    )
    flickr_rows = [
        (image_id, FLICKR, f, raw)
        for image_id, rel in relevance.items()
        if "_photo" in rel
        for f, raw in photo_texts(photos[rel["_photo"]])
    ]
    stored = pl.concat(
        [
            prepare_image_texts(raw_caption, run_id="demo"),
            prepare_image_texts(
                pl.DataFrame(flickr_rows, schema=["image_id", "source", "field", "raw_text"], orient="row"),
                run_id="demo",
            ),
        ]
    )
    with (out / "labels.jsonl").open("w") as fh:
        for row in stored.iter_rows(named=True):
            relevant = bool(relevance[row["image_id"]][row["field"]]) and row["junk"] is None
            fh.write(
                json.dumps(
                    {
                        "text_id": row["text_id"],
                        "image_id": row["image_id"],
                        "source": row["source"],
                        "field": row["field"],
                        "text": row["text"],
                        "relevant": relevant,
                        "junk": row["junk"],
                    }
                )
                + "\n"
            )
    counts = {
        "images": len(pairs),
        "captions_images": len(caption_pairs),
        "captions_records_not_in_sample": min(3, len(wnids)),
        "flickr": kinds,
        "labelled_texts": stored.height,
        "relevant_texts": sum(
            bool(relevance[r["image_id"]][r["field"]]) and r["junk"] is None
            for r in stored.iter_rows(named=True)
        ),
        "wikipedia": roles,
    }
    return HarvestInputs(
        root=out,
        captions=out / "imagenet_captions.json",
        flickr_urls=out / "fall11_urls.txt",
        descriptions=out / "class_descriptions.json",
        labels=out / "labels.jsonl",
        counts=counts,
    )
