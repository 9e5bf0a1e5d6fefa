"""Discrete CQL (Kumar et al., "Conservative Q-Learning for Offline RL", arXiv:2006.04779) on
QR-DQN (Dabney et al. 2018): the quantile-regression Huber loss of the logged action's N
quantiles against n-step targets, plus the conservative term logsumexp_a Q(s, a) - Q(s, a_t)
weighted by min_q_weight, Q being the mean of the quantiles.

As tianshou's `DiscreteCQLPolicy.learn` computes it (EasyRL4Rec's fork yuyq18/tianshou
`policy/imitation/discrete_cql.py` over `QRDQNPolicy`, run by `examples/policy/
run_DiscreteCQL.py`):
  tau_hat_i   = (2i + 1) / (2N), i < N                    (quantile midpoints)
  a*(s)       = argmax_a mean_i theta_i(s, a)               (online network)
  target_j    = sum_{k<n'} gamma^k r_{t+k} + gamma^n theta_target_j(s_{t+n}, a*(s_{t+n}))
                (no bootstrap where the episode ends first)
  u_ij        = target_j - theta_i(s, a_t)
  qr          = mean_i sum_j smooth_l1(u_ij) * |tau_hat_i - 1{u_ij <= 0}|
  cql         = logsumexp_a Q(s, a) - Q(s, a_t)
  loss        = mean_batch(qr) + min_q_weight * mean_batch(cql)
The evaluation acts greedily on Q (the peer's eps_test noise is not added).

Defaults, from `run_DiscreteCQL.py` and the published Coat log (`visual_results/result_logs/
1-batchRL/Coat/[CQL]_2024_01_09-23_18_37.log`, args): 20 quantiles (`--num-quantiles 20`),
min_q_weight 10 (`--min-q-weight 10.`), n-step 3, target network synced every 320 updates,
gamma 0.9.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from jaxrec.batchrl.bcq import smooth_l1


def quantile_midpoints(n: int) -> jax.Array:
  """[n] tau_hat: the midpoints of n equal quantile bins ((tau_i + tau_{i+1}) / 2)."""
  return (2.0 * jnp.arange(n) + 1.0) / (2.0 * n)


def cql_target(r_n: jax.Array, discount_n: jax.Array, dist_boot_target: jax.Array,
               dist_boot: jax.Array) -> jax.Array:
  """One example's [N] target quantiles: r_n + discount_n * dist_boot_target[a*], a* the
  argmax of the online quantiles' mean dist_boot [I, N]; not differentiated."""
  chex.assert_rank([r_n, discount_n, dist_boot_target, dist_boot], [0, 0, 2, 2])
  a = jnp.argmax(jnp.mean(dist_boot, axis=-1))
  return jax.lax.stop_gradient(r_n + discount_n * dist_boot_target[a])


def quantile_huber(theta: jax.Array, target: jax.Array, tau_hat: jax.Array) -> jax.Array:
  """QR-DQN's loss of one action's quantiles theta [N] against target samples [N]:
  mean_i sum_j smooth_l1(u_ij) |tau_hat_i - 1{u_ij <= 0}|, u_ij = target_j - theta_i."""
  chex.assert_rank([theta, target, tau_hat], [1, 1, 1])
  u = jax.lax.stop_gradient(target)[None, :] - theta[:, None]
  weight = jnp.abs(tau_hat[:, None] - jax.lax.stop_gradient(u <= 0.0).astype(u.dtype))
  return jnp.mean(jnp.sum(smooth_l1(u) * weight, axis=1))


def conservative_term(q: jax.Array, a: jax.Array) -> jax.Array:
  """One example: logsumexp_a' q[a'] - q[a] (CQL(H)'s regulariser). q [I], a int."""
  chex.assert_rank([q, a], [1, 0])
  return jax.nn.logsumexp(q) - q[a]


def cql_loss(dist_tm1: jax.Array, a_tm1: jax.Array, target_t: jax.Array,
             tau_hat: jax.Array) -> tuple[jax.Array, jax.Array]:
  """One example: (quantile Huber loss, conservative term). dist_tm1 [I, N] the quantiles at
  s; a_tm1 int; target_t [N] (cql_target); tau_hat [N]."""
  chex.assert_rank([dist_tm1, a_tm1, target_t, tau_hat], [2, 0, 1, 1])
  return (quantile_huber(dist_tm1[a_tm1], target_t, tau_hat),
          conservative_term(jnp.mean(dist_tm1, axis=-1), a_tm1))


def head_sizes(num_items: int, hp) -> tuple[int, ...]:
  return (num_items * hp.num_quantiles,)


def quantiles(apply, params, obs, hp) -> jax.Array:
  """[..., I, N] the quantiles of every action."""
  (out,) = apply(params, obs)
  return out.reshape(out.shape[:-1] + (-1, hp.num_quantiles))


def batch_loss(apply, params, target, sample, hp):
  """The learner interface (learners.py): mean(qr) + min_q_weight * mean(cql)."""
  dist = quantiles(apply, params, sample.obs, hp)
  dist_boot = jax.lax.stop_gradient(quantiles(apply, params, sample.boot_obs, hp))
  dist_boot_target = quantiles(apply, target, sample.boot_obs, hp)
  tgt = jax.vmap(cql_target)(sample.nstep_return, sample.boot_discount, dist_boot_target,
                             dist_boot)
  tau_hat = quantile_midpoints(hp.num_quantiles)
  qr, cons = jax.vmap(cql_loss, in_axes=(0, 0, 0, None))(dist, sample.action, tgt, tau_hat)
  loss = jnp.mean(qr) + hp.min_q_weight * jnp.mean(cons)
  return loss, {"qr_loss": jnp.mean(qr), "cql_loss": jnp.mean(cons)}


def scores(apply, params, obs, hp) -> jax.Array:
  """[N, I] Q = the mean of each action's quantiles (greedy acting)."""
  return jnp.mean(quantiles(apply, params, obs, hp), axis=-1)
