"""Checkpoints of unfinished methods (``recs.partial.jsonl``): what a kill can leave, and resume."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from llmrec_gen.evaluation.results import append_rows, load_checkpoint, start_checkpoint

KEY = "als-0123"


def _row(user: int) -> dict:
    return {"user": user, "items": [user, user + 1], "sources": [], "stats": {}}


@settings(max_examples=40, deadline=None)
@given(cut=st.integers(min_value=0, max_value=len(json.dumps(_row(4))) + 1))
def test_a_torn_tail_never_loses_work_on_a_second_resume(tmp_path_factory, cut):
    path = tmp_path_factory.mktemp("ckpt") / "recs.partial.jsonl"
    start_checkpoint(path, KEY)
    append_rows(path, [_row(u) for u in (1, 2, 3)])
    with path.open("a") as fh:  # a kill while writing user 4: any prefix of its line
        fh.write((json.dumps(_row(4)) + "\n")[:cut])
    first = load_checkpoint(path, KEY)
    whole = cut == len(json.dumps(_row(4))) + 1  # the line and its newline were written
    assert set(first) == ({"1", "2", "3", "4"} if whole else {"1", "2", "3"})
    append_rows(path, [_row(u) for u in (5, 6) if str(u) not in first])  # the resumed run
    assert set(load_checkpoint(path, KEY)) == set(first) | {"5", "6"}  # the second resume


def test_a_checkpoint_of_another_key_is_not_resumed(tmp_path):
    path = tmp_path / "recs.partial.jsonl"
    start_checkpoint(path, KEY)
    append_rows(path, [_row(1)])
    assert load_checkpoint(path, "other") == {} and len(load_checkpoint(path, KEY)) == 1


def test_a_torn_header_starts_over(tmp_path):
    path = tmp_path / "recs.partial.jsonl"
    path.write_text('{"key": "als-01')
    assert load_checkpoint(path, KEY) == {}
