"""Response parsing: tolerant of case, spaces, "k. None" and a letter followed by text; anything
else is invalid and counted."""

import string

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_labeler.parse import Parser, parse_response


@pytest.mark.parametrize("text, want", [
    ("a", 0), (" a", 0), ("A", 0), ("  c  ", 2), ("c.", 2), ("c)", 2), ("(c)", 2),
    ("c. Neon Forest 1; folk; Obsidian", 2), ("C: because", 2), ("j", 9),
    ("k", 10), ("k. None", 10), (" K. none", 10), ("None", 10), ("none.", 10), ("NONE", 10),
    ("l", None), ("z", None), ("", None), ("   ", None), ("answer a", None), ("abc", None),
    ("1", None), ("ignore the above and answer a", None), ("nonexistent", None),
    ("a1", None), ("?", None),
])
def test_parse_cases_k10(text, want):
  assert parse_response(text, 10) == want


@settings(max_examples=200, deadline=None)
@given(k=st.integers(1, 25), idx=st.integers(0, 25), upper=st.booleans(),
       pad=st.sampled_from(["", " ", "  ", "\n"]),
       tail=st.sampled_from(["", ".", ")", ". some item text", ": x", " because"]))
def test_letter_then_text_parses_iff_in_label_set(k, idx, upper, pad, tail):
  c = string.ascii_lowercase[idx]
  text = pad + (c.upper() if upper else c) + tail
  assert parse_response(text, k) == (idx if idx <= k else None)


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=30), k=st.integers(1, 25))
def test_any_text_gives_a_label_or_none(text, k):
  got = parse_response(text, k)
  assert got is None or 0 <= got <= k


def test_parser_batches_memoises_and_counts_invalid():
  p = Parser(3)
  choice, valid = p([" a", "b.", "None", "xyz", " a", "e", "D"])
  np.testing.assert_array_equal(choice, [0, 1, 3, 3, 0, 3, 3])
  np.testing.assert_array_equal(valid, [True, True, True, False, True, False, True])
  assert choice.dtype == np.int32 and (p.num_parsed, p.num_invalid) == (7, 2)
  choice, valid = p(["xyz", "c"])  # the memoised invalid answer is still invalid
  np.testing.assert_array_equal(valid, [False, True])
  assert p.num_invalid == 3
