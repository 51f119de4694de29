"""Class texts that need no network: WordNet glosses and lemma names, and user description files.

Description files (source `file:<file name>`):
- JSON `{"<class name or wnid>": ["text", ...], ...}`, as the CuPL prompt files are;
- JSON Lines, one `{"wnid": ..., "text": ...}` per line (`"class"` or `"name"` instead of `"wnid"`
  is accepted too, and `"text"` may be a list).
A key is matched to a class by wnid, else by its name, else by any of its lemma names (case,
underscores and extra spaces ignored). Keys that match no class or several classes are all
reported in one error, and nothing is written.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import polars as pl
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.common.errors import InputError
from tasks.common.retrying import RETRY
from tasks.harvest.text import prepare_class_texts, store_class_texts

WORDNET_URL = "http://wordnet-rdf.princeton.edu/wn30/{offset}-n"
_WNID = re.compile(r"^n\d{8}$")


def _key(name: str) -> str:
    return " ".join(str(name).replace("_", " ").split()).casefold()


def wordnet_texts(classes: pl.DataFrame) -> pl.DataFrame:
    """(wnid, source, field, text, url): each class's gloss and each of its lemma names."""
    frame = classes.select(
        "wnid",
        "gloss",
        pl.col("lemmas").str.split(",").list.eval(pl.element().str.strip_chars()).alias("lemma"),
        pl.format(WORDNET_URL.replace("{offset}", "{}"), pl.col("wnid").str.slice(1)).alias("url"),
    )
    glosses = frame.select(
        "wnid",
        pl.lit("wordnet").alias("source"),
        pl.lit("gloss").alias("field"),
        pl.col("gloss").alias("text"),
        "url",
    )
    lemmas = (
        frame.explode("lemma")
        .filter(pl.col("lemma").is_not_null() & (pl.col("lemma") != ""))
        .select(
            "wnid",
            pl.lit("wordnet").alias("source"),
            pl.lit("lemma").alias("field"),
            pl.col("lemma").alias("text"),
            "url",
        )
    )
    return pl.concat([glosses, lemmas], how="vertical")


class ClassResolver:
    """Maps a class name, lemma or wnid to the one wnid it names."""

    def __init__(self, classes: pl.DataFrame):
        self.wnids = set(classes["wnid"].to_list())
        self.by_name: dict[str, set[str]] = {}
        self.by_lemma: dict[str, set[str]] = {}
        for row in classes.iter_rows(named=True):
            self.by_name.setdefault(_key(row["name"]), set()).add(row["wnid"])
            for lemma in (row["lemmas"] or "").split(","):
                if lemma.strip():
                    self.by_lemma.setdefault(_key(lemma), set()).add(row["wnid"])

    def candidates(self, name: str) -> set[str]:
        name = str(name).strip()
        if _WNID.match(name):
            return {name} if name in self.wnids else set()
        key = _key(name)
        return self.by_name.get(key) or self.by_lemma.get(key) or set()

    def resolve_all(self, names, where: str) -> dict[str, str]:
        """name -> wnid for every name; one InputError listing every unknown or ambiguous name."""
        resolved, unknown, ambiguous = {}, [], []
        for name in dict.fromkeys(names):
            found = self.candidates(name)
            if len(found) == 1:
                resolved[name] = next(iter(found))
            elif not found:
                unknown.append(name)
            else:
                ambiguous.append(f"{name!r} ({', '.join(sorted(found))})")
        problems = []
        if unknown:
            shown = ", ".join(repr(n) for n in unknown[:10]) + (
                f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
            )
            problems.append(f"{len(unknown)} name(s) match no ImageNet-1k class: {shown}")
        if ambiguous:
            shown = ", ".join(ambiguous[:10]) + (
                f" and {len(ambiguous) - 10} more" if len(ambiguous) > 10 else ""
            )
            problems.append(f"{len(ambiguous)} name(s) match several classes, use the wnid instead: {shown}")
        if problems:
            raise InputError(f"{where}: " + "; ".join(problems))
        return resolved


def _texts(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise ValueError("texts must be a string or a list of strings")


def read_descriptions(path: str | Path, classes: pl.DataFrame) -> pl.DataFrame:
    """(wnid, source, field, text, url) rows of a user description file (see the module docstring)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such description file: {path}")
    source = f"file:{path.name}"
    raw = path.read_bytes()
    try:
        content = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text") from None
    pairs: list[tuple[str, str]] = []
    stripped = content.lstrip()
    if stripped.startswith("{") and path.suffix.lower() not in (".jsonl", ".ndjson"):
        try:
            data = json.loads(content)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        except RecursionError:
            raise InputError(f"{path}: nested too deeply to be a description file") from None
        for name, value in data.items():
            try:
                pairs.extend((name, t) for t in _texts(value))
            except ValueError as exc:
                raise InputError(f"{path}: class {name!r}: {exc}") from None
    else:
        for number, line in enumerate(content.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                name = record.get("wnid") or record.get("class") or record.get("name")
                if not name:
                    raise ValueError("no 'wnid' (or 'class'/'name')")
                if not isinstance(name, str):
                    raise ValueError(f"the class must be a string, not {type(name).__name__}")
                pairs.extend((name, t) for t in _texts(record.get("text")))
            except RecursionError:
                raise InputError(f"{path}: line {number}: nested too deeply") from None
            except (json.JSONDecodeError, AttributeError, ValueError) as exc:
                reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc) or "not an object"
                raise InputError(f'{path}: line {number}: {reason}; expected {{"wnid", "text"}}') from None
    mapping = ClassResolver(classes).resolve_all([name for name, _ in pairs], str(path))
    return pl.DataFrame(
        {
            "wnid": [mapping[name] for name, _ in pairs],
            "source": [source] * len(pairs),
            "field": ["description"] * len(pairs),
            "text": [text for _, text in pairs],
            "url": [None] * len(pairs),
        },
        schema={
            "wnid": pl.String,
            "source": pl.String,
            "field": pl.String,
            "text": pl.String,
            "url": pl.String,
        },
    )


# -- Prefect tasks (thin wrappers the harvest flows call) -----------------------------------------


@task(name="store-wordnet-texts", cache_policy=NO_CACHE, **RETRY)
def store_wordnet_texts(wh, classes: pl.DataFrame, run_id: str) -> int:
    """Store the WordNet gloss and lemma names of every class (rows added)."""
    texts = prepare_class_texts(wordnet_texts(classes), run_id)
    return wh.write(lambda con: store_class_texts(con, texts))


@task(name="store-description-file", cache_policy=NO_CACHE, **RETRY)
def store_description_texts(wh, raw: pl.DataFrame, run_id: str) -> int:
    """Store the texts of a user description file (rows added)."""
    texts = prepare_class_texts(raw, run_id)
    return wh.write(lambda con: store_class_texts(con, texts))
