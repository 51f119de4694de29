"""Artifact helpers: readable markdown, masked secrets, valid keys, nothing outside a flow run."""

from __future__ import annotations

from flows.artifacts import artifact_key, publish_link, publish_summary, publish_table, summary_markdown


def test_artifact_key_is_lowercase_letters_digits_and_dashes():
    assert artifact_key("Ingest summary: n01440764 / train") == "ingest-summary-n01440764-train"
    assert artifact_key("***") == "artifact"


def test_summary_markdown_is_a_table_with_secrets_masked():
    text = summary_markdown(
        "Harvest", {"fetched": 12, "p_true": 0.123456, "flickr_api_key": "k-123", "note": "a|b"}
    )
    assert text.startswith("## Harvest\n")
    assert "| fetched | 12 |" in text
    assert "| p_true | 0.1235 |" in text
    assert "k-123" not in text and "| flickr_api_key | *** |" in text
    assert "a\\|b" in text  # a pipe in a value does not break the table


def test_helpers_do_nothing_outside_a_flow_run(tmp_path):
    assert publish_summary("x", {"a": 1}) is None
    assert publish_table([{"a": 1}]) is None
    assert publish_link(tmp_path, "report") is None
