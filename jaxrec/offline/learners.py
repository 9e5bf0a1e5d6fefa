"""Offline learner names -> their loss modules: one registry line each.

A learner module defines `batch_loss(net, main, target, batch, hp, key, step) -> (loss,
metrics dict)`: the loss of the main copy's params `main` on a `Transitions` minibatch
(vmapped single-example losses inside), with `target` the other copy's params (double Q),
`hp` the `HParams`, `key` a fresh PRNG key (negative sampling) and `step` the update count
(warm-up switches). The loop (jaxrec.offline.loop) differentiates it with respect to `main`.

Still to come (issue 20): sac (SQN's actor-critic: ce weighted by the stop-gradient Q),
snqn and sa2c (Xin et al. WSDM 2022: sampled negatives, advantage weighting with its clip,
the SNQN warm-up before SA2C); each is a module beside these and a line below.
"""

from __future__ import annotations

import dataclasses
from types import ModuleType


@dataclasses.dataclass(frozen=True)
class HParams:
  """The learners' own hyperparameters (OfflineConfig's values)."""
  gamma: float = 0.5


@dataclasses.dataclass(frozen=True)
class Learner:
  """copies: network copies trained (2: double Q with a random role swap per step);
  q_head: the network carries a Q head."""
  module: str
  copies: int
  q_head: bool

  def loss_module(self) -> ModuleType:
    import importlib
    return importlib.import_module(f"jaxrec.offline.{self.module}")


LEARNERS = {
    "normal": Learner("normal", copies=1, q_head=False),
    "sqn": Learner("sqn", copies=2, q_head=True),
}
