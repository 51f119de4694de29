"""Bad input to `imtext`: one line on stderr, exit code 2, and refused before any flow starts.

A flow that starts and then fails prints a Prefect traceback, so every case also asserts that the
command's flow was never called (the flows are replaced by stand-ins that record their calls).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

IMTEXT = str(Path(sys.executable).with_name("imtext"))


@pytest.fixture
def flows_called(home, monkeypatch):
    """Replace the harvest and train flows with stand-ins; the list records each flow started."""
    import flows.harvest
    import flows.train

    called: list[str] = []

    def stand_in(name):
        def flow(**kwargs):
            called.append(name)
            raise AssertionError(f"{name} started")

        return flow

    monkeypatch.setattr(flows.harvest, "harvest_classes_flow", stand_in("harvest-classes"))
    monkeypatch.setattr(flows.harvest, "harvest_images_flow", stand_in("harvest-images"))
    monkeypatch.setattr(flows.train, "train_flow", stand_in("train"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return called


def run(*args: str):
    from flows.cli import app

    return CliRunner().invoke(app, list(args))


def assert_one_line(result, *fragments: str) -> str:
    assert result.exit_code == 2, (result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def bad_files(tmp_path):
    wnid_list = tmp_path / "list.jsonl"
    wnid_list.write_text(json.dumps({"wnid": ["n01440764"], "text": "a fish"}) + "\n")
    deep_jsonl = tmp_path / "deep.jsonl"
    deep_jsonl.write_text("[" * 200_000 + "]" * 200_000 + "\n")
    deep_json = tmp_path / "deep.json"
    deep_json.write_text('{"tench": ' + "[" * 200_000 + "]" * 200_000 + "}")
    return {"list": wnid_list, "deep_jsonl": deep_jsonl, "deep_json": deep_json, "dir": tmp_path}


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--descriptions", "{dir}/nosuch.json"], ("--descriptions", "no such file", "nosuch.json")),
        (["--descriptions", "{list}"], ("list.jsonl", "line 1", "must be a string")),
        (["--descriptions", "{deep_jsonl}"], ("deep.jsonl", "nested too deeply")),
        (["--descriptions", "{deep_json}"], ("deep.json", "nested too deeply")),
        (["--classes", "n01440764,n99999999"], ("n99999999",)),
    ],
    ids=["missing-file", "wnid-is-a-list", "deep-jsonl", "deep-json", "unknown-wnid"],
)
def test_harvest_classes_refuses_bad_input_before_the_flow(flows_called, bad_files, home, args, fragments):
    args = [a.format(**bad_files) for a in args]
    assert_one_line(run("harvest", "classes", "--no-wikipedia", *args), *fragments)
    assert flows_called == []
    assert not (home / "warehouse").exists()


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--captions", "{dir}/nosuch.json"], ("--captions", "no such file", "nosuch.json")),
        (["--captions", "{dir}"], ("--captions", "not a file")),
        (["--captions", "{deep_jsonl}"], ("not an ImageNet-Captions file",)),
        (["--flickr-urls", "{dir}/urls.txt"], ("--flickr-urls", "no such file", "urls.txt")),
    ],
    ids=["missing-captions", "captions-is-a-folder", "malformed-captions", "missing-url-list"],
)
def test_harvest_images_refuses_bad_input_before_the_flow(flows_called, bad_files, home, args, fragments):
    args = [a.format(**bad_files) for a in args]
    assert_one_line(run("harvest", "images", *args), *fragments)
    assert flows_called == []
    assert not (home / "warehouse").exists()


def test_train_refuses_an_unknown_base_model_before_the_flow(flows_called):
    assert_one_line(run("train", "--base-model", "nosuch", "--allow-invalid"), "'nosuch'", "minilm-offline")
    assert flows_called == []


def test_train_refuses_a_closed_gate_before_the_flow(flows_called, wh):
    wh.con  # a warehouse that was never validated
    wh.close()
    assert_one_line(run("train", "--base-model", "tiny-roberta"), "validation gate closed", "never validated")
    assert flows_called == []


def test_the_installed_command_prints_one_line_and_no_traceback(home, tmp_path, bad_files):
    """The console script itself: what a person sees on the terminal."""
    env = {**os.environ, "IMTEXT_HOME": str(home), "PREFECT_HOME": str(tmp_path / "prefect")}
    done = subprocess.run(
        [IMTEXT, "harvest", "classes", "--no-wikipedia", "--descriptions", str(bad_files["list"])],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        f'error: {bad_files["list"]}: line 1: the class must be a string, not list; expected {{"wnid", "text"}}'
    ]
