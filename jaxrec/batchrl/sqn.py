"""SQN as EasyRL4Rec's batch-RL protocol defines it (`examples/advance/run_SQN.py`, the
fork's `tianshou/policy/imitation/sqn.py`): not Xin et al.'s self-supervised Q-learning of
the next-item setting (that one is jaxrec.offline.sqn), but a `DiscreteBCQPolicy` subclass
with two linear heads on the state tracker (`Actor_Linear`: a Q head and a supervised
"imitation" head) whose *action choice* is picked by `--which_head`:

  qhead  a*(s) = argmax_a Q(s, a)                 (run_SQN.py's default)
  shead  a*(s) = argmax_a imitation(s, a)         (the published Coat script, Coat.sh)
  bcq    a*(s) = BCQ's argmax over the likely actions (bcq.bcq_action)

`SQNPolicy` overrides only `forward`, and tianshou's BCQ calls `forward` both to act and, in
`_target_q`, to choose the bootstrap action on `obs_next`, so the head decides both:

  target = sum_{k<n'} gamma^k r_{t+k} + gamma^n Q_target(s_{t+n}, a*(s_{t+n}))
  loss   = smooth_l1(Q(s, a) - target) + CE(imitation(s), a) + penalty * mean imitation(s)^2

(`DiscreteBCQPolicy.learn`, unchanged: bcq.bcq_loss). The heads are linear outputs (no
softmax: `Actor_Linear`, unlike the BCQ script's tianshou `Actor`s), so `--head_softmax`
does not apply.

Defaults: which_head shead (Coat.sh `run_SQN.py ... --which_head "shead"`); n-step 3, target
every 320 updates, imitation penalty 0.01 (run_SQN.py's `get_args_SQN` / `get_args_offline`);
the unlikely-action threshold matters only for `bcq` (run_SQN.py's default is 0.6, the shared
`--unlikely_threshold` flag's 0.5 is BCQ's published log; pass 0.6 for the peer's).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxrec.batchrl import bcq

WHICH_HEADS = ("qhead", "shead", "bcq")


def head_action(q: jax.Array, imitation: jax.Array, which_head: str,
                log_threshold: float) -> jax.Array:
  """One example's action [] from q, imitation [I]: SQNPolicy.forward's choice."""
  if which_head == "qhead":
    return jnp.argmax(q)
  if which_head == "shead":
    return jnp.argmax(imitation)
  if which_head == "bcq":
    return bcq.bcq_action(q, imitation, log_threshold)
  raise ValueError(f"which_head must be one of {', '.join(WHICH_HEADS)}; got {which_head!r}")


def sqn_target(r_n: jax.Array, discount_n: jax.Array, q_boot_target: jax.Array,
               q_boot: jax.Array, imitation_boot: jax.Array, which_head: str,
               log_threshold: float) -> jax.Array:
  """One example's n-step target: r_n + discount_n * q_boot_target[a*], a* = head_action of
  the online heads at the bootstrap state; not differentiated."""
  a = head_action(q_boot, imitation_boot, which_head, log_threshold)
  return jax.lax.stop_gradient(r_n + discount_n * q_boot_target[a])


def head_sizes(num_items: int, hp) -> tuple[int, ...]:
  return (num_items, num_items)  # Q, imitation (supervised head)


def batch_loss(apply, params, target, sample, hp):
  """The learner interface (learners.py): BCQ's loss with the bootstrap action of the chosen
  head."""
  lt = bcq.log_tau(hp.unlikely_threshold)
  q, imitation = apply(params, sample.obs)
  q_boot, imitation_boot = apply(params, sample.boot_obs)
  q_boot_target, _ = apply(target, sample.boot_obs)
  tgt = jax.vmap(sqn_target, in_axes=(0, 0, 0, 0, 0, None, None))(
      sample.nstep_return, sample.boot_discount, q_boot_target,
      jax.lax.stop_gradient(q_boot), jax.lax.stop_gradient(imitation_boot), hp.which_head, lt)
  td, ce, reg = jax.vmap(bcq.bcq_loss)(q, imitation, sample.action, tgt)
  loss = jnp.mean(td) + jnp.mean(ce) + hp.imitation_penalty * jnp.mean(reg)
  return loss, {"q_loss": jnp.mean(td), "imitation_loss": jnp.mean(ce),
                "reg_loss": jnp.mean(reg), "q_taken": jnp.mean(jnp.take_along_axis(
                    q, sample.action[:, None], axis=1))}


def scores(apply, params, obs, hp) -> jax.Array:
  """[N, I] what the greedy evaluation takes the argmax of: the chosen head (bcq: Q with the
  unlikely actions pushed below the likely ones, bcq.scores)."""
  q, imitation = apply(params, obs)
  if hp.which_head == "qhead":
    return q
  if hp.which_head == "shead":
    return imitation
  return jnp.where(bcq.unlikely(imitation, bcq.log_tau(hp.unlikely_threshold)),
                   q - bcq.UNLIKELY_PENALTY, q)
