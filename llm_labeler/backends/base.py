"""The backend interface and the label-token arithmetic shared by the model backends."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from jaxrec.errors import ConfigError
from jaxrec.shards import LabelShard, RequestShard
from llm_labeler.prompts import RESPONSE


class Backend(Protocol):
  """Labels whole request shards. `model` and `meta` are recorded in the label manifest;
  `prompt_tokens` counts the prompt tokens processed so far (0 for the oracle)."""

  name: str
  model: str
  meta: dict
  prompt_tokens: int

  def label(self, requests: RequestShard, shard: str = "") -> LabelShard:
    """requests (N rows, k candidates) -> labels: choice [N] in 0..k, valid [N],
    logprobs [N, k+1] normalised over the k + 1 labels. `shard` names it (seeds, errors)."""
    ...


def label_token_ids(tokenizer, labels: list[str]) -> list[int]:
  """The token id of each label as the model would write it right after the prompt.

  Tokenises RESPONSE + " " + label and keeps the token it adds to RESPONSE (" a" in BPE
  vocabularies, "▁a" in SentencePiece ones); every label must be one distinct token.
  """
  enc = lambda s: tokenizer.encode(s, add_special_tokens=False)
  base = enc(RESPONSE)
  ids = []
  for label in labels:
    full = enc(f"{RESPONSE} {label}")
    if full[:len(base)] != base or len(full) != len(base) + 1:
      raise ConfigError(f"label {label!r} is not one token after the prompt for this tokenizer "
                        f"({full[len(base) - 1:]}); the labeler needs single-token labels")
    ids.append(full[-1])
  if len(set(ids)) != len(ids):
    raise ConfigError(f"labels {labels} share token ids {ids}")
  return ids


def choose(label_scores: np.ndarray, none_option: bool = True
           ) -> tuple[np.ndarray, np.ndarray]:
  """label_scores [N, k+1] (logits or log-probabilities of the label tokens only) ->
  (choice [N] int32 = argmax, the greedy constrained decode; logprobs [N, k+1] float32
  normalised over the labels: the soft preference). Whatever else the model would have
  written, the choice is a label. none_option=False (a template without "None", LEA's): the
  last label gets probability 0."""
  s = np.array(label_scores, np.float64)
  if not none_option:
    s[:, -1] = -np.inf
  s = s - s.max(axis=1, keepdims=True)
  logprobs = s - np.log(np.exp(s).sum(axis=1, keepdims=True))
  return np.argmax(s, axis=1).astype(np.int32), logprobs.astype(np.float32)
