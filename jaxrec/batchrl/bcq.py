"""Discrete BCQ (Fujimoto et al., "Benchmarking Batch Deep RL Algorithms", arXiv:1910.01708):
a Q head trained on n-step double-Q targets whose argmax is restricted to actions the
imitation head finds likely, beside the imitation head's cross-entropy on the logged action.

As tianshou's `DiscreteBCQPolicy.learn` computes it (EasyRL4Rec's fork yuyq18/tianshou
`policy/imitation/discrete_bcq.py`, run by `examples/policy/run_DiscreteBCQ.py`):
  unlikely(s) = imitation(s) - max imitation(s) < log(tau)       (Eq. 17 of the paper)
  a*(s)       = argmax_a Q(s, a) over the actions not unlikely    (online heads)
  target      = sum_{k<n'} gamma^k r_{t+k} + gamma^n Q_target(s_{t+n}, a*(s_{t+n}))
                (no bootstrap where the episode ends first; tianshou compute_nstep_return)
  loss        = smooth_l1(Q(s, a) - target) + CE(imitation(s), a)
                + penalty * mean_a imitation(s, a)^2
each a mean over the batch. The evaluation acts greedily on Q with the unlikely actions out
(the peer's eps_test 0.001 noise is not added).

Defaults, from the peer's published Coat run (`visual_results/result_logs/1-batchRL/Coat/
[BCQ]_2024_01_15-17_48_19.log`, args): unlikely-action threshold tau 0.5 (its message
"BCQ0115uat0.5"; `Coat.sh` passes 0.6, the table's number comes from the log), imitation-logits
penalty 0.01, n-step 3, target network synced every 320 updates, gamma 0.9 (the shared
options in run.py name theirs).

`head_softmax` (off by default): the peer builds both heads as tianshou `Actor`s, whose
`softmax_output` defaults to True, so its "Q values" are softmax probabilities in [0, 1] and its
"imitation logits" are probabilities too (the cross-entropy is then taken of log_softmax of
probabilities, and `prob - max prob < log tau` masks an action only when the best one holds
more than -log(tau) of the mass). With the flag on, both heads go through a softmax before
everything above, as the peer's run does; off, they are the linear outputs the algorithm
(and tianshou's own Atari example) assume.
"""

from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp


def log_tau(threshold: float) -> float:
  """log(tau), -inf for tau = 0 (nothing is unlikely), as tianshou's `_log_tau`."""
  return math.log(threshold) if threshold > 0 else -math.inf


def unlikely(imitation: jax.Array, log_threshold: float) -> jax.Array:
  """[I] bool: imitation [I] - its max < log tau."""
  return imitation - jnp.max(imitation, axis=-1, keepdims=True) < log_threshold


def bcq_action(q: jax.Array, imitation: jax.Array, log_threshold: float) -> jax.Array:
  """One example: argmax of q [I] over the actions the imitation head [I] finds likely."""
  chex.assert_rank([q, imitation], [1, 1])
  return jnp.argmax(jnp.where(unlikely(imitation, log_threshold), -jnp.inf, q))


def bcq_target(r_n: jax.Array, discount_n: jax.Array, q_boot_target: jax.Array,
               q_boot: jax.Array, imitation_boot: jax.Array,
               log_threshold: float) -> jax.Array:
  """One example's n-step target: r_n + discount_n * q_boot_target[a*], a* = bcq_action of the
  online heads q_boot, imitation_boot [I] at the bootstrap state; not differentiated."""
  chex.assert_rank([r_n, discount_n, q_boot_target], [0, 0, 1])
  a = bcq_action(q_boot, imitation_boot, log_threshold)
  return jax.lax.stop_gradient(r_n + discount_n * q_boot_target[a])


def smooth_l1(x: jax.Array) -> jax.Array:
  """PyTorch's smooth_l1_loss element (beta 1): 0.5 x^2 for |x| < 1, else |x| - 0.5."""
  ax = jnp.abs(x)
  return jnp.where(ax < 1.0, 0.5 * x * x, ax - 0.5)


def bcq_loss(q_tm1: jax.Array, imitation_tm1: jax.Array, a_tm1: jax.Array,
             target_t: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """One example: (smooth-L1 TD loss of Q, cross-entropy of the imitation head, mean squared
  imitation output). q_tm1, imitation_tm1 [I]; a_tm1 int; target_t scalar (bcq_target)."""
  chex.assert_rank([q_tm1, imitation_tm1, a_tm1, target_t], [1, 1, 0, 0])
  td = jax.lax.stop_gradient(target_t) - q_tm1[a_tm1]
  ce = -jax.nn.log_softmax(imitation_tm1)[a_tm1]
  return smooth_l1(td), ce, jnp.mean(jnp.square(imitation_tm1))


def head_sizes(num_items: int, hp) -> tuple[int, ...]:
  return (num_items, num_items)  # Q, imitation


def heads(apply, params, obs, hp) -> tuple[jax.Array, jax.Array]:
  """(Q [..., I], imitation [..., I]); softmax outputs with hp.head_softmax (the peer's)."""
  q, imitation = apply(params, obs)
  if hp.head_softmax:
    q, imitation = jax.nn.softmax(q), jax.nn.softmax(imitation)
  return q, imitation


def batch_loss(apply, params, target, sample, hp):
  """The learner interface (learners.py): mean(TD + CE + penalty * reg) over the batch."""
  lt = log_tau(hp.unlikely_threshold)
  q, imitation = heads(apply, params, sample.obs, hp)
  q_boot, imitation_boot = heads(apply, params, sample.boot_obs, hp)
  q_boot_target, _ = heads(apply, target, sample.boot_obs, hp)
  tgt = jax.vmap(bcq_target, in_axes=(0, 0, 0, 0, 0, None))(
      sample.nstep_return, sample.boot_discount, q_boot_target,
      jax.lax.stop_gradient(q_boot), jax.lax.stop_gradient(imitation_boot), lt)
  td, ce, reg = jax.vmap(bcq_loss)(q, imitation, sample.action, tgt)
  loss = jnp.mean(td) + jnp.mean(ce) + hp.imitation_penalty * jnp.mean(reg)
  return loss, {"q_loss": jnp.mean(td), "imitation_loss": jnp.mean(ce),
                "reg_loss": jnp.mean(reg), "q_taken": jnp.mean(jnp.take_along_axis(
                    q, sample.action[:, None], axis=1))}


# Unlikely actions sink below every likely one but stay finite, so an evaluation mode's mask
# (-inf on items already recommended) still leaves the best allowed item when every allowed
# item is unlikely.
UNLIKELY_PENALTY = 1e9


def scores(apply, params, obs, hp) -> jax.Array:
  """[N, I] Q with the unlikely actions pushed below the likely ones (greedy acting)."""
  q, imitation = heads(apply, params, obs, hp)
  return jnp.where(unlikely(imitation, log_tau(hp.unlikely_threshold)),
                   q - UNLIKELY_PENALTY, q)
