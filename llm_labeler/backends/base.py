"""The backend interface and the label-token arithmetic shared by the model backends."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from jaxrec.errors import ConfigError
from jaxrec.shards import LabelShard, RequestShard
from llm_labeler.prompts import ANSWERS, RESPONSE, YESNO_RESPONSE


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


def label_token_ids(tokenizer, labels: list[str], response: str = RESPONSE) -> list[int]:
  """The token id of each label as the model would write it right after the prompt.

  Tokenises response + " " + label and keeps the token it adds to the response (" a" in BPE
  vocabularies, "▁a" in SentencePiece ones); every label must be one distinct token.
  `response`: the prompt's last words (YESNO_RESPONSE for the Yes/No template's answers).
  """
  enc = lambda s: tokenizer.encode(s, add_special_tokens=False)
  base = enc(response)
  ids = []
  for label in labels:
    full = enc(f"{response} {label}")
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


def answer_token_ids(tokenizer) -> list[int]:
  """[yes, no]: the answer tokens of the Yes/No template (one token each after its response)."""
  return label_token_ids(tokenizer, list(ANSWERS), YESNO_RESPONSE)


def yesno_label_scores(answer_logits: np.ndarray, k: int) -> np.ndarray:
  """answer_logits [N * k, 2] (the Yes and No logits after each of a request's k Yes/No
  prompts, request-major) -> label scores [N, k + 1] for `choose`: candidate j scores its
  log-odds logit(Yes) - logit(No), "None" scores 0. Normalised, that is a choice model with an
  outside option: p(j) = e^{s_j} / (1 + sum_i e^{s_i}), p(None) = 1 / (1 + sum_i e^{s_i}), so
  None wins exactly when the model answers No to every candidate (the Table 1 prompt's "if you
  think that none of the candidates will be selected")."""
  a = np.asarray(answer_logits, np.float64)
  if a.ndim != 2 or a.shape[1] != 2 or a.shape[0] % k:
    raise ConfigError(f"answer logits of shape {a.shape}: expected [N * {k}, 2]")
  with np.errstate(invalid="ignore"):
    s = (a[:, 0] - a[:, 1]).reshape(-1, k)
  s[np.isnan(s)] = -np.inf  # neither answer scored (-inf - -inf): not a Yes
  return np.concatenate([s, np.zeros((len(s), 1))], axis=1)
