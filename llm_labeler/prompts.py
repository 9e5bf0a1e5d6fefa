"""The preference prompt of paper Table 1, word for word, rendered for whole request shards.

The paper's template (Sec. 4.1.1, Table 1), with {scenario}, {item}, {behavior} and the
attributes filled from the dataset's catalog, the history as item texts and the k candidates
lettered a, b, ... with the next letter for "None" (k = 10: a-j and "k. None"):

  Below is an instruction that describes a task, paired with an input that provides further
  context. Write a response that appropriately completes the request.

  Instruction: You are a user in a {scenario} platform now. The {item} is in the form of
  {attribute1; attribute2; ...}. Given a user's {behavior} history of {item}, and candidate
  {item} labelled by lowercase letter to be decided to recommend to the user, identify which
  {item} the user will mostly prefer to at next timestamp. Please judge by the user's preference
  on {attribute1; attribute2; ...}; if you think that none of the candidates will be selected by
  the user, please answer "None"
  Input: History: {interacted items}. Which one the user will mostly like at next timestamp in
  the following candidates?
  a. {item1}
  ...
  k. None
  Response: By analysing the user's preference, the user will select

LEA's augmentation prompt (template LEA_TEMPLATE_VERSION; paper 002, Sec. 3.4): the Table 1
user part (preamble, an instruction naming the platform, the item form and the history) with
LEA's selection prompt p_l in place of the candidate question, and no None option:

  Input: History: {interacted items}. In the list of following 5 {item}, based on the history,
  select the letter of the {item} that the user is most likely to continue to {behavior}:
  a. {item1}
  ...
  e. {item5}
  Response: By analysing the user's preference, the user will select

LEA asks for "the number of the track"; the candidates stay lettered here because every label
must be one token after the response (`label_token_ids`), and digit-splitting tokenizers (Qwen,
Llama) spend two tokens on " 1". The shard format keeps k + 1 label columns; for this template
the last ("None") is never shown and the backends give it probability 0.

The prompt ends where the paper's response puts "{label from a-k}", so the model's next token
is the label (" a" ... " k"). An item is rendered as its attribute values joined by "; " (the
form the instruction announces), in parentheses inside the history. The paper prints the
candidates on one line; we put each on its own line (same words, easier to read for a model).

With a chat template (instruct models) the preamble, instruction and input are the user turn
and the response sentence starts the assistant turn; `chat_wrapper` takes the two halves of the
template from a tokenizer once, so rendering stays string concatenation.

Item text cannot forge prompt structure (docs/labeler.md, "Prompt injection"): every catalog
value (attribute values, and the scenario/item/behavior nouns and attribute names) goes
through `clean_value` first: control and format characters (Unicode category C*: newlines, tabs,
escapes, zero-width and bidi marks) become spaces, whitespace runs (any Unicode whitespace,
line and paragraph separators included) collapse to one space, the ends are stripped, the
tokenizer's special-token strings (`special_strings`: BOS/EOS, chat turn markers, which a
tokenizer would otherwise encode as control tokens) are cut out, and a value is capped at
MAX_VALUE_CHARS characters. So each candidate stays on its own line, no item can add a
"k. None" or "Response:" line or a chat turn, and plain printable text is unchanged.

Speed: the per-item strings are built once per catalog (each distinct value cleaned once; a
printable value takes the fast path); a shard is rendered by fancy-indexing object arrays of
those strings with the shard's id arrays (padding -1 picks a trailing entry) and one
`str.join` per prompt.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Sequence

import numpy as np

from jaxrec import shards
from jaxrec.errors import ConfigError, DataError
from jaxrec.shards import Catalog

# Bump whenever a rendered prompt changes; recorded in every label manifest.
# v2: catalog values are cleaned (`clean_value`); prompts of clean catalogs are as in v1.
TEMPLATE_VERSION = "table1-v2"
# LEA's augmentation prompt (module docstring): its own version, recorded in the request and
# label manifests of jaxrec.offline.augment; k candidates, no None option.
LEA_TEMPLATE_VERSION = shards.LEA_TEMPLATE
# Per-candidate Yes/No prompts for Table 1 requests (module docstring, "Yes/No scoring").
YESNO_TEMPLATE_VERSION = "yesno-v1"
TEMPLATES = (TEMPLATE_VERSION, LEA_TEMPLATE_VERSION, YESNO_TEMPLATE_VERSION)

PREAMBLE = ("Below is an instruction that describes a task, paired with an input that provides "
            "further context. Write a response that appropriately completes the request.")
INSTRUCTION = (
    "You are a user in a {scenario} platform now. The {item} is in the form of {attributes}. "
    "Given a user's {behavior} history of {item}, and candidate {item} labelled by lowercase "
    "letter to be decided to recommend to the user, identify which {item} the user will mostly "
    "prefer to at next timestamp. Please judge by the user's preference on {attributes}; if you "
    "think that none of the candidates will be selected by the user, please answer \"None\"")
INPUT = ("History: {history}. Which one the user will mostly like at next timestamp in the "
         "following candidates?")
LEA_INSTRUCTION = (
    "You are a user in a {scenario} platform now. The {item} is in the form of {attributes}. "
    "Given a user's {behavior} history of {item}, identify which {item} the user will most "
    "likely {behavior} at next timestamp. Please judge by the user's preference on "
    "{attributes}")
LEA_SELECT = ("In the list of following {k} {item}, based on the history, select the letter of "
              "the {item} that the user is most likely to continue to {behavior}:")
RESPONSE = "By analysing the user's preference, the user will select"
YESNO_INSTRUCTION = (
    "You are a user in a {scenario} platform now. The {item} is in the form of {attributes}. "
    "Given a user's {behavior} history of {item} and one candidate {item}, judge whether the "
    "user will like the candidate at next timestamp. Please judge by the user's preference on "
    "{attributes}.")
YESNO_CANDIDATE = ". Candidate: ("
YESNO_QUESTION = "). Will the user like this candidate at next timestamp?"
YESNO_RESPONSE = "Yes or No? The answer is"
ANSWERS = ("Yes", "No")  # the two answer tokens (" Yes", " No" after YESNO_RESPONSE)
NONE_TEXT = "None"
EMPTY_HISTORY = "none"
_CHAT_SENTINEL = "\x00JAXREC_PROMPT\x00"
MAX_K = shards.MAX_K  # the shard format's bound: one lowercase letter per label
# Characters kept of one attribute value (after cleaning): long real titles (Amazon's run to
# ~200) pass whole; a 10k-character value cannot crowd out the rest of the prompt.
MAX_VALUE_CHARS = 256


def has_none(template: str) -> bool:
  """Whether labels of `template` include "None" (Table 1 and its Yes/No form do, LEA's does
  not)."""
  check_template(template)
  return template != LEA_TEMPLATE_VERSION


def is_yesno(template: str) -> bool:
  """Whether `template` asks one Yes/No prompt per candidate (k prompts per request)."""
  return check_template(template) == YESNO_TEMPLATE_VERSION


def prompts_per_request(template: str, k: int) -> int:
  """Prompts one request of k candidates becomes: k for the Yes/No template, else 1."""
  return k if is_yesno(template) else 1


def check_template(template: str) -> str:
  if template not in TEMPLATES:
    raise DataError(f"prompt template {template!r} unknown to this labeler (it renders "
                    f"{', '.join(TEMPLATES)})")
  return template


def letters(k: int) -> list[str]:
  """The k + 1 labels: k candidate letters and the letter of "None" (k=10: a..j, k)."""
  if not 1 <= k <= MAX_K:
    raise ConfigError(f"--k must be in 1..{MAX_K} (one lowercase letter per candidate plus "
                      f"one for None), got {k}")
  return list(string.ascii_lowercase[:k + 1])


def clean_value(value: str, reserved: Sequence[str] = ()) -> str:
  """One catalog value as the prompt shows it: a single line of at most MAX_VALUE_CHARS.

  Category C* characters -> " ", whitespace runs -> " ", ends stripped, every `reserved`
  string (special tokens) replaced by " " until none is left, then capped. Printable text with
  single spaces, no reserved string and at most MAX_VALUE_CHARS characters is unchanged.
  """
  return _clean(value, _reserved_pattern(reserved))


def _reserved_pattern(reserved: Sequence[str]) -> re.Pattern | None:
  reserved = sorted({r for r in reserved if r.strip()}, key=len, reverse=True)
  return re.compile("|".join(map(re.escape, reserved))) if reserved else None


def _clean(value: str, reserved: re.Pattern | None) -> str:
  if not value.isprintable():  # False for any C* or non-space Z* character
    value = "".join(" " if unicodedata.category(c)[0] == "C" else c for c in value)
  value = " ".join(value.split())
  # A cut leaves a space, so it can hardly join a new token; loop anyway (each pass removes
  # non-space characters, so it ends).
  while reserved is not None and reserved.search(value):
    value = " ".join(reserved.sub(" ", value).split())
  return value[:MAX_VALUE_CHARS].rstrip()


def item_strings(catalog: Catalog, reserved: Sequence[str] = ()) -> list[str]:
  """[I] each item's cleaned attribute values (`clean_value`) joined by '; '."""
  rows = np.asarray(catalog.item_text).tolist()
  pattern = _reserved_pattern(reserved)
  cleaned = ((v, _clean(v, pattern)) for v in {v for row in rows for v in row})
  changed = {v: c for v, c in cleaned if c != v}  # usually empty: real catalogs are clean
  if changed:
    rows = [[changed.get(v, v) for v in row] for row in rows]
  return ["; ".join(row) for row in rows]


def special_strings(tokenizer) -> tuple[str, ...]:
  """The tokenizer's special-token strings (BOS/EOS, pad, chat turn markers such as
  "<|im_start|>"): a tokenizer encodes them as control tokens wherever they occur in the
  prompt text, so item text must not carry them."""
  found = set(getattr(tokenizer, "all_special_tokens", None) or ())
  decoder = getattr(tokenizer, "added_tokens_decoder", None) or {}
  found.update(t.content for t in decoder.values() if getattr(t, "special", False))
  return tuple(sorted(s for s in found if isinstance(s, str) and s.strip()))


def chat_wrapper(tokenizer) -> tuple[str, str]:
  """(head, tail) of a tokenizer's chat template around one user turn, generation prompt
  included: prompt = head + user text + tail + assistant text. Prompts are encoded with
  special tokens (as vLLM does), so a BOS that the template writes and the tokenizer also
  adds is dropped from head; templates whose first token merely equals BOS (ChatML models
  where bos = "<|im_start|>") keep it."""
  text = tokenizer.apply_chat_template([{"role": "user", "content": _CHAT_SENTINEL}],
                                       tokenize=False, add_generation_prompt=True)
  if text.count(_CHAT_SENTINEL) != 1:
    raise ConfigError("--chat_template: the tokenizer's chat template does not keep the user "
                      "message verbatim")
  head, tail = text.split(_CHAT_SENTINEL)
  bos, bos_id = getattr(tokenizer, "bos_token", None), getattr(tokenizer, "bos_token_id", None)
  with_special = tokenizer.encode("x", add_special_tokens=True)
  adds_bos = (bos_id is not None and with_special[:1] == [bos_id]
              and len(with_special) > len(tokenizer.encode("x", add_special_tokens=False)))
  if adds_bos and bos and head.startswith(bos):  # else the prompt would start with two BOS
    head = head[len(bos):]
  return head, tail


class PromptRenderer:
  """Renders Table 1 prompts for a catalog and k; build once, call per shard."""

  def __init__(self, catalog: Catalog, k: int, chat: tuple[str, str] | None = None,
               reserved: Sequence[str] = (), template: str = TEMPLATE_VERSION):
    """Args:
      catalog: the dataset's item text and prompt nouns (all cleaned by `clean_value`).
      k: candidates per prompt.
      chat: (head, tail) from `chat_wrapper` for instruct models; None = the plain template.
      reserved: strings cut out of catalog text: `special_strings(tokenizer)`.
      template: TEMPLATE_VERSION (Table 1), LEA_TEMPLATE_VERSION (no None line) or
        YESNO_TEMPLATE_VERSION (one Yes/No prompt per candidate: `render` returns N * k).
    """
    self.template = check_template(template)
    self.k = k
    yesno = is_yesno(template)
    self.per_request = prompts_per_request(template, k)
    self.labels = letters(k)
    self.num_items = len(catalog.item_text)
    pattern = _reserved_pattern(reserved)
    noun = lambda v: _clean(v, pattern)
    attributes = "; ".join(noun(a) for a in catalog.attribute_names)
    lea = template == LEA_TEMPLATE_VERSION
    nouns = {"scenario": noun(catalog.scenario), "item": noun(catalog.item_noun),
             "attributes": attributes, "behavior": noun(catalog.behavior)}
    instruction = (LEA_INSTRUCTION if lea else YESNO_INSTRUCTION if yesno
                   else INSTRUCTION).format(**nouns)
    before_history, after_history = INPUT.split("{history}")
    if lea:
      after_history = ". " + LEA_SELECT.format(k=k, item=nouns["item"],
                                              behavior=nouns["behavior"])
    body_head = f"{PREAMBLE}\n\nInstruction: {instruction}\nInput: {before_history}"
    none_line = "" if lea or yesno else f"\n{self.labels[k]}. {NONE_TEXT}"
    question, response = (YESNO_QUESTION, YESNO_RESPONSE) if yesno else ("", RESPONSE)
    if chat is None:
      self._head = body_head
      self._tail = f"{question}{none_line}\nResponse: {response}"
    else:
      self._head = chat[0] + body_head
      self._tail = f"{question}{none_line}{chat[1]}{response}"
    self._mid = YESNO_CANDIDATE if yesno else after_history
    items = item_strings(catalog, reserved)
    # History columns 0..L-2 carry their separator; the last column is the newest item, which
    # is padding only when the whole (right-aligned) history is empty. Index -1 = the pad.
    self._hist = np.array([f"({s}), " for s in items] + [""], dtype=object)
    self._hist_last = np.array([f"({s})" for s in items] + [EMPTY_HISTORY], dtype=object)
    self._cand = np.array(items, dtype=object)
    self._cand_prefix = np.array([f"\n{c}. " for c in self.labels[:k]], dtype=object)

  def render(self, history: np.ndarray, candidates: np.ndarray) -> list[str]:
    """history [N, L] int32 (-1 padding, right-aligned), candidates [N, k] int32 -> N prompts
    (Yes/No template: N * k, request n's candidate j at n * k + j, its k prompts differing in
    the candidate only, which comes last)."""
    history = np.asarray(history)
    candidates = np.asarray(candidates)
    n, length = history.shape
    if candidates.shape != (n, self.k):
      raise ConfigError(f"candidates has shape {candidates.shape}, expected ({n}, {self.k})")
    if n and max(int(history.max()), int(candidates.max())) >= self.num_items:
      raise DataError(f"item id out of range for the catalog's {self.num_items} items")
    if n and (int(candidates.min()) < 0 or int(history.min()) < -1):
      raise DataError("candidate ids must be >= 0 and history ids >= -1 (-1 = padding)")
    if self.per_request > 1:
      return self._render_yesno(history, candidates)
    parts = np.empty((n, length + 2 * self.k + 3), dtype=object)
    parts[:, 0] = self._head
    parts[:, 1:length] = self._hist[history[:, :-1]]
    parts[:, length] = self._hist_last[history[:, -1]]
    parts[:, length + 1] = self._mid
    parts[:, length + 2:length + 2 + 2 * self.k:2] = self._cand_prefix
    parts[:, length + 3:length + 3 + 2 * self.k:2] = self._cand[candidates]
    parts[:, -1] = self._tail
    join = "".join
    return [join(row) for row in parts.tolist()]

  def _render_yesno(self, history: np.ndarray, candidates: np.ndarray) -> list[str]:
    n, length = history.shape
    history = np.repeat(history, self.k, axis=0)
    parts = np.empty((n * self.k, length + 4), dtype=object)
    parts[:, 0] = self._head
    parts[:, 1:length] = self._hist[history[:, :-1]]
    parts[:, length] = self._hist_last[history[:, -1]]
    parts[:, length + 1] = self._mid
    parts[:, length + 2] = self._cand[candidates.reshape(-1)]
    parts[:, -1] = self._tail
    join = "".join
    return [join(row) for row in parts.tolist()]

  def render_one(self, history, candidates) -> str:
    return self.render(np.asarray(history)[None], np.asarray(candidates)[None])[0]
