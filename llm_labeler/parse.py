"""LLM response -> label index: 0..k-1 a candidate, k = "None", or None when unparseable.

Accepted (case and surrounding spaces ignored): the letter alone ("c", " C"), the letter with
punctuation or text after it ("c.", "c)", "(c)", "c. Neon Forest 1", "c: ..."), "None" or the
None letter ("k", "k. None", "none."). Anything else, including a letter past the None letter or
a word that merely starts with a letter ("answer"), is invalid: the label shard stores
valid=False with choice k, and the labeler counts it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from llm_labeler.prompts import NONE_TEXT, letters

# A letter, optionally in parentheses, then the end or a non-letter (so "answer" is no "a").
_LETTER_RE = re.compile(r"\(?([a-z])\)?(?:$|[^a-z0-9])", re.ASCII)
_NONE_RE = re.compile(rf"{NONE_TEXT.lower()}(?:$|[^a-z0-9])", re.ASCII)


def parse_response(text: str, k: int) -> int | None:
  """One response -> label index in 0..k (k = "None"), or None when it is not a label."""
  t = text.strip().lower()
  if _NONE_RE.match(t):
    return k
  m = _LETTER_RE.match(t)
  if m is None:
    return None
  idx = ord(m.group(1)) - ord("a")
  return idx if idx <= k else None


class Parser:
  """Parses batches for one k, memoising repeated responses (LLM outputs repeat a lot)."""

  def __init__(self, k: int):
    self.k = k
    self._cache: dict[str, int] = {}
    for i, c in enumerate(letters(k)):
      for s in (c, " " + c, c.upper(), " " + c.upper()):
        self._cache[s] = i
    self.num_parsed = 0
    self.num_invalid = 0

  def __call__(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """-> (choice [N] int32, k where invalid; valid [N] bool)."""
    cache, k = self._cache, self.k
    out = np.empty(len(texts), np.int32)
    for i, t in enumerate(texts):
      c = cache.get(t)
      if c is None:
        p = parse_response(t, k)
        c = -1 if p is None else p
        if len(cache) < 100_000:
          cache[t] = c
      out[i] = c
    valid = out >= 0
    out[~valid] = k
    self.num_parsed += len(texts)
    self.num_invalid += int((~valid).sum())
    return out, valid
