"""Discrete CRR (Wang et al., "Critic Regularized Regression", arXiv:2006.15134): a Q critic
trained on one-step targets that take the *target policy's expectation* of the target critic,
and an actor trained by behaviour cloning of the logged action weighted by
exp(advantage / beta), clipped.

As tianshou's `DiscreteCRRPolicy.learn` computes it (EasyRL4Rec's fork yuyq18/tianshou
`policy/imitation/discrete_crr.py`, run by `examples/policy/run_DiscreteCRR.py`), per example:
  target  = r_t + gamma * sum_a' pi_target(a'|s') Q_target(s', a')   (0 where done)
  critic  = 0.5 * (Q(s, a_t) - target)^2
  A       = Q(s, a_t) - sum_a pi(a|s) Q(s, a)
  actor   = -log pi(a_t|s) * min(exp(A / beta), ratio_max)     ("exp" improvement mode)
  cql     = logsumexp_a Q(s, a) - Q(s, a_t)                     (tianshou adds it to CRR)
  loss    = mean(actor) + mean(critic) + min_q_weight * mean(cql)
The evaluation samples the actor's softmax (tianshou's `deterministic_eval` defaults to False
and the peer's script leaves it).

One difference, kept on purpose: tianshou does not stop the gradient through the weight
exp(A / beta), so its actor loss also pushes the critic and the actor's own probabilities
through A; here the weight is a constant of the actor loss, as in the paper (Eq. 3, f
applied to the critic's estimate).

Defaults, from tianshou's `DiscreteCRRPolicy` signature (the peer's script passes none of
them) and the published Coat log (`visual_results/result_logs/1-batchRL/Coat/
[CRR]_2024_01_10-01_21_29.log`, args): beta 1.0, ratio upper bound 20, min_q_weight 10, target
networks (actor and critic) synced every 320 updates, gamma 0.9, one-step targets (the
script's --n-step 3 is not read by CRR).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from jaxrec.batchrl.cql import conservative_term


def crr_target(r_t: jax.Array, discount_t: jax.Array, q_t_target: jax.Array,
               logits_t_target: jax.Array) -> jax.Array:
  """One example: r_t + discount_t * E_{a' ~ softmax(logits_t_target)} q_t_target[a'] (the
  target actor's and critic's outputs [I] at s'); not differentiated."""
  chex.assert_rank([r_t, discount_t, q_t_target, logits_t_target], [0, 0, 1, 1])
  expected = jnp.sum(jax.nn.softmax(logits_t_target) * q_t_target)
  return jax.lax.stop_gradient(r_t + discount_t * expected)


def crr_loss(q_tm1: jax.Array, logits_tm1: jax.Array, a_tm1: jax.Array, target_t: jax.Array,
             beta: float, ratio_max: float
             ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """One example: (weighted cross-entropy of the actor, 0.5 * TD error^2 of the critic, the
  conservative term, the weight). q_tm1, logits_tm1 [I] the critic and actor at s; a_tm1 int;
  target_t scalar (crr_target)."""
  chex.assert_rank([q_tm1, logits_tm1, a_tm1, target_t], [1, 1, 0, 0])
  qa = q_tm1[a_tm1]
  critic = 0.5 * jnp.square(qa - jax.lax.stop_gradient(target_t))
  log_pi = jax.nn.log_softmax(logits_tm1)
  advantage = qa - jnp.sum(jnp.exp(log_pi) * q_tm1)
  weight = jax.lax.stop_gradient(jnp.clip(jnp.exp(advantage / beta), 0.0, ratio_max))
  return -log_pi[a_tm1] * weight, critic, conservative_term(q_tm1, a_tm1), weight


def head_sizes(num_items: int, hp) -> tuple[int, ...]:
  return (num_items, num_items)  # actor logits, critic Q


def batch_loss(apply, params, target, sample, hp):
  """The learner interface (learners.py): mean(actor) + mean(critic) + min_q_weight *
  mean(cql); the target actor and critic evaluate s'."""
  logits, q = apply(params, sample.obs)
  logits_next, q_next = apply(target, sample.next_obs)
  discount = hp.gamma * (1.0 - sample.done.astype(jnp.float32))
  tgt = jax.vmap(crr_target)(sample.reward, discount, q_next, logits_next)
  actor, critic, cons, weight = jax.vmap(crr_loss, in_axes=(0, 0, 0, 0, None, None))(
      q, logits, sample.action, tgt, hp.beta, hp.ratio_max)
  loss = jnp.mean(actor) + jnp.mean(critic) + hp.min_q_weight * jnp.mean(cons)
  return loss, {"actor_loss": jnp.mean(actor), "critic_loss": jnp.mean(critic),
                "cql_loss": jnp.mean(cons), "weight": jnp.mean(weight)}


def scores(apply, params, obs, hp) -> jax.Array:
  """[N, I] the actor's logits (categorical acting)."""
  del hp
  return apply(params, obs)[0]
