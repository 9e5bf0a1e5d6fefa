"""Offline learner names -> their loss modules: one registry line each.

A learner module defines `batch_loss(net, main, target, batch, hp, key, step) -> (loss,
metrics dict)`: the loss of the main copy's params `main` on a `Transitions` minibatch
(vmapped single-example losses inside), with `target` the other copy's params (double Q),
`hp` the `HParams`, `key` a fresh PRNG key (negative sampling) and `step` the update count
(warm-up switches). The loop (jaxrec.offline.loop) differentiates it with respect to `main`.

  normal  cross-entropy only (normal.py)
  sqn     + double-Q TD loss on a Q head (sqn.py; Xin et al. SIGIR 2020)
  sac     sqn, then the ce weighted by the stop-gradient Q(s, a) (sac.py; SIGIR 2020)
  snqn    sqn + sampled negative actions in the TD loss (snqn.py; Xin et al. WSDM 2022)
  sa2c    snqn, then the ce weighted by the clipped advantage (sa2c.py; WSDM 2022)

`reads` names the OfflineConfig options a learner uses beyond the shared ones (sizes, data,
optimizer); `python -m jaxrec.offline` refuses the others when they are set on the command line
(`check_applicable`). A learner with `warmup` trains in two phases switched at
`HParams.warmup` updates, each with its own Adam state (the authors' opt1 / opt2;
jaxrec.offline.loop.two_phase); `second_lr` names the option holding the second Adam's
learning rate.
"""

from __future__ import annotations

import dataclasses
from types import ModuleType

from jaxrec.config import refuse


@dataclasses.dataclass(frozen=True)
class HParams:
  """The learners' own hyperparameters (OfflineConfig's values; the modules name their
  sources)."""
  gamma: float = 0.5
  neg: int = 10  # snqn, sa2c: negative actions sampled per transition
  neg_reward: float = 0.0  # snqn, sa2c: their reward in the TD loss
  warmup: int = 15000  # sac, sa2c: updates of the first phase (sqn / snqn loss)
  clip: float = 0.0  # sa2c: the advantage is clipped to [clip, 10] when clip >= 0
  w_ah: float = 0.1  # LEA augmentation (jaxrec/offline/lea.py): weight of L_ah
  w_aq: float = 0.01  # ... of L_aq (learners with a Q head)
  augment_start: int = 0  # ... the first update that uses the augmented actions


@dataclasses.dataclass(frozen=True)
class Learner:
  """copies: network copies trained (2: double Q with a random role swap per step);
  q_head: the network carries a Q head; reads: the learner-specific OfflineConfig fields it
  uses; warmup: two phases with two Adam states; second_lr: the OfflineConfig field of the
  second phase's learning rate."""
  module: str
  copies: int
  q_head: bool
  reads: tuple[str, ...] = ()
  warmup: bool = False
  second_lr: str = "learning_rate"

  def loss_module(self) -> ModuleType:
    import importlib
    return importlib.import_module(f"jaxrec.offline.{self.module}")


_NEG = ("neg", "neg_reward")
_Q = ("gamma", "w_aq")  # w_aq: LEA's augmented Q loss needs a Q head
LEARNERS = {
    "normal": Learner("normal", copies=1, q_head=False),
    "sqn": Learner("sqn", copies=2, q_head=True, reads=_Q),
    "sac": Learner("sac", copies=2, q_head=True, reads=_Q + ("warmup",), warmup=True),
    "snqn": Learner("snqn", copies=2, q_head=True, reads=_Q + _NEG),
    "sa2c": Learner("sa2c", copies=2, q_head=True,
                    reads=_Q + _NEG + ("warmup", "lr_2", "clip"), warmup=True,
                    second_lr="lr_2"),
}
# Every learner-specific field: refused on the command line for a learner that does not read it.
LEARNER_FIELDS = tuple(dict.fromkeys(f for le in LEARNERS.values() for f in le.reads))


def check_applicable(agent: str, passed: dict[str, str]) -> None:
  """passed: {OfflineConfig field: flag name} set on the command line (config.
  set_on_command_line); a learner-specific flag `agent` does not read is a one-line
  ConfigError."""
  refuse([flag for path, flag in passed.items()
          if path in LEARNER_FIELDS and path not in LEARNERS[agent].reads],
         f"to --agent={agent}")
