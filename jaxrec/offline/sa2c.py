"""SA2C (Xin et al., "Supervised Advantage Actor-Critic for Sequential Recommendation",
WSDM 2022): SNQN (jaxrec/offline/snqn.py) for a warm-up, then the supervised head's
cross-entropy weighted by the clipped, stop-gradient advantage of the logged action.

As the authors' code trains it (their TensorFlow SA2C script, "Nov 2021 by XinXin", arXiv
2111.03474; snqn.py says where it is found):
- the advantage of the logged action a among the transition's negatives n_1..n_k, all from the
  main copy's Q head at s and not differentiated:
    A = Q(s, a) - (Q(s, a) + sum_j Q(s, n_j)) / (1 + k)
  (their `q_indexed_avg`; LEA Eq. 12 is this with k = 1);
- their clip: `if clip >= 0: advantage = tf.clip_by_value(advantage, clip, 10)`, so with the
  default `--clip 0` the weight lies in [0, 10] (a negative advantage stops the ce, it never
  reverses it); a negative --clip leaves A unclipped;
- while the global update count is below 15,000 (`if total_step < 15000`, hard-coded) the loss
  is SNQN's, mean(ce + TD losses); then mean(TD losses + A * ce) (their `--weight` on the TD
  losses, default 1.0, is not an option here);
- each phase has its own Adam (their opt1 at `--lr`, opt2 at `--lr_2`): the second phase starts
  from fresh moments at learning rate 0.001 (jaxrec.offline.loop.two_phase).
Their off-policy correction (`--smooth`, the ce also weighted by (pi(a|s) / popularity(a))
clipped to [0.1, 10] to the power smooth) defaults to smooth = 0, a weight of exactly 1, and is
not built.

Defaults (OfflineConfig), from that code: warm-up 15,000 (`--warmup`), second learning rate
0.001 (`--lr_2 0.001`), clip 0 (`--clip 0.0`), plus SNQN's negatives. With the default synthetic
dataset (123 updates per epoch) a run shorter than 122 epochs never leaves the warm-up and
trains as snqn does: the same loss and optimizer, though not bit for bit (the compiled graphs
differ; docs/offline.md shows the two 10-epoch runs parting in the 8th significant digit in
epoch 1 and drifting apart from there).
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp

from jaxrec.offline import snqn

ADVANTAGE_MAX = 10.0  # the upper bound of the authors' clip_by_value(advantage, clip, 10)


def advantage(q_tm1: jax.Array, a_tm1: jax.Array, neg_tm1: jax.Array,
              clip: float) -> jax.Array:
  """One example: Q(s, a) minus the mean of Q(s, .) over {a} and the negatives, not
  differentiated, clipped to [clip, ADVANTAGE_MAX] when clip >= 0 (a Python float). q_tm1 [I];
  a_tm1 int; neg_tm1 [k] int."""
  chex.assert_rank([q_tm1, a_tm1, neg_tm1], [1, 0, 1])
  q = jax.lax.stop_gradient(q_tm1)
  q_a = q[a_tm1]
  adv = q_a - (q_a + jnp.sum(q[neg_tm1])) / (1 + neg_tm1.shape[0])
  return jnp.clip(adv, clip, ADVANTAGE_MAX) if clip >= 0 else adv


def sa2c_loss(logits_tm1: jax.Array, q_tm1: jax.Array, a_tm1: jax.Array, r_t: jax.Array,
              discount_t: jax.Array, q_t_value: jax.Array, q_t_selector: jax.Array,
              neg_tm1: jax.Array, neg_r: jax.Array, neg_discount: jax.Array,
              q_tm1_value: jax.Array, q_tm1_selector: jax.Array, warm: jax.Array,
              clip: float) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """One example: (weighted cross-entropy, positive TD loss, summed negative TD losses, the ce
  weight). The weight is 1 while `warm` (bool scalar), else advantage(q_tm1, a_tm1, neg_tm1,
  clip). The other arguments are snqn.snqn_loss's."""
  chex.assert_rank(warm, 0)
  ce, td_pos, td_neg = snqn.snqn_loss(logits_tm1, q_tm1, a_tm1, r_t, discount_t, q_t_value,
                                      q_t_selector, neg_tm1, neg_r, neg_discount, q_tm1_value,
                                      q_tm1_selector)
  weight = jnp.where(warm, 1.0, advantage(q_tm1, a_tm1, neg_tm1, clip))
  return weight * ce, td_pos, td_neg, weight


def batch_loss(net, main, target, batch, hp, key, step):
  """The learner interface (jaxrec.offline.learners): mean(weighted ce + TD losses) of the main
  copy; `step` (updates so far) below hp.warmup: SNQN's loss (the negatives drawn from `key`
  as snqn draws them)."""
  inputs = snqn.loss_inputs(net, main, target, batch, hp, key)
  warm = jnp.broadcast_to(step < hp.warmup, batch.action.shape)
  wce, td_pos, td_neg, weight = jax.vmap(functools.partial(sa2c_loss, clip=hp.clip))(
      *inputs, warm)
  return jnp.mean(wce + td_pos + td_neg), {"ce_loss": jnp.mean(wce),
                                           "q_loss": jnp.mean(td_pos),
                                           "neg_q_loss": jnp.mean(td_neg),
                                           "ce_weight": jnp.mean(weight)}
