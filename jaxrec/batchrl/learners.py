"""Batch-RL learner names -> their loss modules: one registry line each.

A learner module defines
  head_sizes(num_items, hp) -> tuple[int, ...]   the network's heads (networks.MultiHead)
  batch_loss(apply, params, target, sample, hp) -> (loss, metrics dict)
      the loss of `params` on a `Sample` (vmapped single-example losses inside); `target` the
      target network's params (synced every --target_period updates by the loop)
  scores(apply, params, obs, hp) -> [N, I]       what the policy acts on (`strategy` below)

  bcq  discrete BCQ (bcq.py; Fujimoto et al. 2019, tianshou DiscreteBCQPolicy)
  cql  discrete CQL on QR-DQN (cql.py; Kumar et al. 2020, tianshou DiscreteCQLPolicy)
  crr  discrete CRR (crr.py; Wang et al. 2020, tianshou DiscreteCRRPolicy)
  sqn  EasyRL4Rec's SQN (sqn.py; BCQ's loss, the action of the head --which_head picks)

`reads` names the BatchConfig options a learner uses beyond the shared ones; `python -m
jaxrec.batchrl` refuses the others when they are set on the command line.
"""

from __future__ import annotations

import dataclasses
import importlib
from types import ModuleType
from typing import Any, NamedTuple

import jax

from jaxrec.config import refuse


class Sample(NamedTuple):
  """A minibatch of B logged transitions as the learners read them; obs fields are the
  network's input (items [B, L], or (items, rewards) with a reward input)."""
  obs: Any
  action: jax.Array  # [B] int32
  reward: jax.Array  # [B] float32
  done: jax.Array  # [B] bool
  next_obs: Any
  nstep_return: jax.Array  # [B] float32
  boot_obs: Any  # the observation the n-step target bootstraps from
  boot_discount: jax.Array  # [B] float32 gamma^n, 0 where the episode ends first


@dataclasses.dataclass(frozen=True)
class HParams:
  """The learners' own hyperparameters (BatchConfig's values; the modules name their
  sources)."""
  gamma: float = 0.9
  unlikely_threshold: float = 0.5  # bcq
  imitation_penalty: float = 0.01  # bcq
  head_softmax: bool = False  # bcq: the peer's softmax on both heads (bcq.py)
  num_quantiles: int = 20  # cql
  min_q_weight: float = 10.0  # cql, crr
  beta: float = 1.0  # crr
  ratio_max: float = 20.0  # crr
  which_head: str = "shead"  # sqn


@dataclasses.dataclass(frozen=True)
class Learner:
  """strategy: how the evaluation acts on `scores` (jaxrec.agents.acting.select); n_step: it
  reads the n-step target (--n_step applies)."""
  module: str
  strategy: str
  reads: tuple[str, ...]

  def loss_module(self) -> ModuleType:
    return importlib.import_module(f"jaxrec.batchrl.{self.module}")


LEARNERS = {
    "bcq": Learner("bcq", "greedy", ("n_step", "unlikely_threshold", "imitation_penalty",
                                     "head_softmax")),
    "cql": Learner("cql", "greedy", ("n_step", "num_quantiles", "min_q_weight")),
    "crr": Learner("crr", "categorical", ("min_q_weight", "beta", "ratio_max")),
    "sqn": Learner("sqn", "greedy", ("n_step", "unlikely_threshold", "imitation_penalty",
                                     "which_head")),
}
LEARNER_FIELDS = tuple(dict.fromkeys(f for le in LEARNERS.values() for f in le.reads))


def check_applicable(agent: str, passed: dict[str, str]) -> None:
  """passed: {BatchConfig field: flag} set on the command line; a learner-specific flag that
  `agent` does not read is a one-line ConfigError."""
  refuse([flag for path, flag in passed.items()
          if path in LEARNER_FIELDS and path not in LEARNERS[agent].reads],
         f"to --agent={agent}")
