"""The prompt of paper Table 1: its words, the lettering, the history, and the fast renderer
against a straightforward per-prompt formatting."""

import os
import re
import string

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxrec import shards
from jaxrec.errors import ConfigError, DataError
from labeler.conftest import make_requests
from llm_labeler import prompts

PAPER = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "papers",
                     "000_8157873149f94502.txt")
# Paper Table 1, copied from the paper (its bold markup removed), placeholders in braces.
TABLE1 = [
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.",
    "Instruction: You are a user in a {scenario} platform now. The {item} is in the form of "
    "{attributes}. Given a user's {behavior} history of {item}, and candidate {item} labelled "
    "by lowercase letter to be decided to recommend to the user, identify which {item} the user "
    "will mostly prefer to at next timestamp. Please judge by the user's preference on "
    "{attributes}; if you think that none of the candidates will be selected by the user, "
    "please answer \"None\"",
    "Input: History: ",
    ". Which one the user will mostly like at next timestamp in the following candidates?",
    "Response: By analysing the user's preference, the user will select",
]


def _fill(text, cat):
  return text.format(scenario=cat.scenario, item=cat.item_noun, behavior=cat.behavior,
                     attributes="; ".join(cat.attribute_names))


def test_table1_words_appear_filled_and_in_order(catalog):
  prompt = prompts.PromptRenderer(catalog, 10).render_one([-1, -1, 3, 7], list(range(10)))
  at = 0
  for piece in TABLE1:
    found = prompt.find(_fill(piece, catalog), at)
    assert found >= 0, piece
    at = found + len(piece)
  assert prompt.endswith("the user will select")  # the model's next token is the label
  assert "music streaming" in prompt and "title; genre; label" in prompt


@pytest.mark.skipif(not os.path.exists(PAPER), reason="shared/papers not beside the checkout")
def test_template_matches_the_paper_file():
  text = open(PAPER).read().replace("**", "")  # the paper's bold markup
  text = text.replace("{attribute1; attribute2; ...}", "{attributes}")
  text = re.sub(r"\s+", " ", text)
  for piece in (prompts.PREAMBLE, prompts.INSTRUCTION, prompts.INPUT.split("{history}")[1],
                prompts.RESPONSE):
    assert piece in text, piece


@pytest.mark.parametrize("k", [1, 3, 10, 25])
def test_candidates_lettered_with_none_last(catalog, k):
  r = prompts.PromptRenderer(catalog, k)
  cands = np.arange(k, dtype=np.int32)
  prompt = r.render_one([0, 1, 2, 3], cands)
  items = prompts.item_strings(catalog)
  lines = prompt.split("\n")
  start = next(i for i, l in enumerate(lines) if l.startswith("a. "))
  letters = string.ascii_lowercase
  assert lines[start:start + k] == [f"{letters[j]}. {items[j]}" for j in range(k)]
  assert lines[start + k] == f"{letters[k]}. None"
  assert prompts.letters(k) == list(letters[:k + 1])
  if k == 10:
    assert lines[start + k] == "k. None"  # the paper's example: a-j and k. None


@pytest.mark.parametrize("k", [0, 26, -1])
def test_k_out_of_range_is_a_config_error(catalog, k):
  with pytest.raises(ConfigError, match="--k must be in 1..25"):
    prompts.PromptRenderer(catalog, k)


def test_history_is_item_texts_oldest_first_without_padding(catalog):
  items = prompts.item_strings(catalog)
  r = prompts.PromptRenderer(catalog, 2)
  p = r.render_one([-1, -1, 5, 9], [0, 1])
  assert f"History: ({items[5]}), ({items[9]}). Which one" in p
  assert "History: none. Which one" in r.render_one([-1, -1, -1, -1], [0, 1])


def test_chat_wrapper_puts_the_response_in_the_assistant_turn(catalog):
  r = prompts.PromptRenderer(catalog, 3, chat=("<user>", "</user><assistant>"))
  p = r.render_one([1, 2], [3, 4, 5])
  assert p.startswith("<user>Below is an instruction")
  assert p.endswith("d. None</user><assistant>" + prompts.RESPONSE)
  assert "Response:" not in p


def test_ids_outside_the_catalog_are_refused(catalog):
  r = prompts.PromptRenderer(catalog, 2)
  n = len(catalog.item_text)
  with pytest.raises(DataError, match="out of range"):
    r.render(np.array([[0, n]]), np.array([[0, 1]]))
  with pytest.raises(DataError, match=">= 0"):
    r.render(np.array([[0, 1]]), np.array([[-1, 1]]))


def naive_prompt(cat: shards.Catalog, history, candidates) -> str:
  """The reference: one prompt at a time with str.format, as the paper's table reads."""
  item = lambda i: "; ".join(str(x) for x in cat.item_text[i])
  hist = [f"({item(i)})" for i in history if i >= 0]
  labels = string.ascii_lowercase
  cands = "".join(f"\n{labels[j]}. {item(c)}" for j, c in enumerate(candidates))
  body = prompts.INSTRUCTION.format(scenario=cat.scenario, item=cat.item_noun,
                                    behavior=cat.behavior,
                                    attributes="; ".join(cat.attribute_names))
  inp = prompts.INPUT.format(history=", ".join(hist) or "none")
  return (f"{prompts.PREAMBLE}\n\nInstruction: {body}\nInput: {inp}{cands}\n"
          f"{labels[len(candidates)]}. None\nResponse: {prompts.RESPONSE}")


@settings(max_examples=30, deadline=None)
@given(k=st.integers(1, 12), n=st.integers(0, 20), seed=st.integers(0, 1000))
def test_fast_renderer_equals_naive_formatting(catalog, k, n, seed):
  req = make_requests(n, k, len(catalog.item_text), history_len=5, seed=seed)
  fast = prompts.PromptRenderer(catalog, k).render(req.history, req.candidates)
  assert fast == [naive_prompt(catalog, h, c) for h, c in zip(req.history, req.candidates)]
