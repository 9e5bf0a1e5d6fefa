"""Position debiasing (`--permutations=P`): score each request under P candidate orders and
average the label probabilities back onto the items.

Order p shows the candidates rotated by s_p = round(p k / P) positions (p = 0 is the order of
the request), so with P = k every item is shown once at every letter and position effects
cancel exactly for a model whose bias is a per-letter factor. Each order's normalised k + 1
probabilities are mapped back from letters to items, averaged over the P orders (the "None"
probability too), and the choice is the argmax of the average. P = 1 returns the backend's
labels unchanged. Cost: P forward passes per request (P times the labeling time).
"""

from __future__ import annotations

import numpy as np

from jaxrec.errors import ConfigError
from jaxrec.shards import LabelShard, RequestShard


def shifts(k: int, permutations: int) -> list[int]:
  """The rotation of each order: P distinct shifts in 0..k-1, the first 0."""
  if not 1 <= permutations <= k:
    raise ConfigError(f"--permutations must be in 1..k={k}, got {permutations}")
  return [round(p * k / permutations) % k for p in range(permutations)]


def rotation(k: int, shift: int) -> np.ndarray:
  """order [k]: the item shown at letter j is candidate order[j]."""
  return (np.arange(k) + shift) % k


def average(label_fn, requests: RequestShard, permutations: int, shard: str = "") -> LabelShard:
  """label_fn(RequestShard, shard) -> LabelShard, run under every order and averaged."""
  if permutations == 1:
    return label_fn(requests, shard)
  k = requests.candidates.shape[1]
  n = len(requests.session)
  probs = np.zeros((n, k + 1), np.float64)
  valid = np.ones(n, bool)
  for s in shifts(k, permutations):
    order = rotation(k, s)
    lab = label_fn(requests._replace(candidates=requests.candidates[:, order]), shard)
    if lab.logprobs is None:
      raise ConfigError("--permutations needs a backend that returns label probabilities")
    p = np.exp(lab.logprobs.astype(np.float64))
    probs[:, order] += p[:, :k]  # letter j showed candidate order[j]
    probs[:, k] += p[:, k]
    valid &= lab.valid
  probs /= permutations
  logprobs = np.log(np.maximum(probs, 1e-30)).astype(np.float32)
  return LabelShard(np.argmax(probs, axis=1).astype(np.int32), valid, logprobs)


class Debiased:
  """A backend whose labels are `average`d over P candidate orders."""

  def __init__(self, backend, permutations: int):
    self.inner, self.permutations = backend, permutations
    self.name = backend.name
    self.model = f"{backend.model} [{permutations} rotations]"
    self.meta = dict(backend.meta, permutations=permutations)

  @property
  def prompt_tokens(self) -> int:
    return self.inner.prompt_tokens

  def label(self, requests: RequestShard, shard: str = "") -> LabelShard:
    return average(self.inner.label, requests, self.permutations, shard)
