"""LEA's augmented losses (paper 002, "LLM as environment", Sec. 3.4, Eq. 14-16): each labeled
(history, chosen item a^e) is an extra positive of the transition it was asked for.

  L = L_c + w_ah * L_ah + w_aq * L_aq                                         (Eq. 16)
  L_ah = -log softmax(ce head at s)[a^e]                                      (Eq. 14)
  L_aq = 0.5 * (r^e + gamma * Q_target(s^e', argmax Q_main(s^e', .)) - Q(s, a^e))^2   (Eq. 15)

L_c is the learner's own loss (jaxrec.offline.learners), unchanged. Choices made here, each
where the paper leaves it open:
- s^e' = the history with a^e appended (the paper: "the positive actions will transit the
  current state to the next state"), bootstrapped double-Q style as the learner's own TD loss
  (Algorithm 1: the target copy evaluates the main copy's argmax), cut where the logged
  transition ends its sequence (done), with the learner's gamma;
- r^e = 1, the logged clicks' reward (LEA Sec. 5.1 sets every reward to 1): the LE reward
  model r^e(p_t, a^e) is a later step (it would replace `AUG_REWARD` by a per-row input);
- 0.5 * td^2 as the learners' TD losses (trfl's double_qlearning); the paper writes td^2;
- L_ah is the plain cross-entropy of Eq. 14, also for SA2C (whose L_h is advantage-weighted);
- a transition without a label (not requested, unparsed) adds 0, and so does every one before
  update `augment_start`; the batch mean is over all transitions, as L_c's;
- a learner without a Q head (normal) adds only w_ah * L_ah.
Defaults w_ah = 0.1, w_aq = 0.01: the paper's best (Sec. 5.3, Figure 4, SA2C-LEASR on LFM).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from jaxrec.offline.normal import cross_entropy
from jaxrec.offline.sqn import double_q_learning

AUG_REWARD = 1.0  # r^e without the LE reward model: a logged click's (transitions.REWARD_CLICK)


def lea_loss(logits_tm1: jax.Array, q_tm1: jax.Array, a_e: jax.Array, r_e: jax.Array,
             discount_t: jax.Array, q_t_value: jax.Array, q_t_selector: jax.Array,
             on: jax.Array) -> tuple[jax.Array, jax.Array]:
  """One example: (L_ah, L_aq), both 0 unless `on` (bool scalar). logits_tm1 [I] the ce head
  at s, q_tm1 [I] the main copy's Q(s, .), a_e int the labeled item (any valid id when off),
  r_e and discount_t scalars, q_t_value / q_t_selector [I] the target / main copies' Q at
  s^e' (not differentiated)."""
  chex.assert_rank([logits_tm1, q_tm1, a_e, r_e, discount_t, on], [1, 1, 0, 0, 0, 0])
  td = double_q_learning(q_tm1, a_e, r_e, discount_t, q_t_value, q_t_selector)
  on = on.astype(jnp.float32)
  return on * cross_entropy(logits_tm1, a_e), on * 0.5 * jnp.square(td)


def lea_ce_loss(logits_tm1: jax.Array, a_e: jax.Array, on: jax.Array) -> jax.Array:
  """One example: L_ah alone (a learner without a Q head), 0 unless `on`."""
  chex.assert_rank([logits_tm1, a_e, on], [1, 0, 0])
  return on.astype(jnp.float32) * cross_entropy(logits_tm1, a_e)


def extend(history: jax.Array, item: jax.Array) -> jax.Array:
  """[B, L] histories with item [B] appended as the newest (the oldest slot drops)."""
  return jnp.concatenate([history[:, 1:], item[:, None].astype(history.dtype)], axis=1)


def with_augmentation(batch_loss, q_head: bool):
  """The learner interface (jaxrec.offline.learners) of `batch_loss` plus w_ah * L_ah +
  w_aq * L_aq (Eq. 16) on the batch's `aug_action` [B] (-1 = none), from update
  hp.augment_start on."""

  def loss(net, main, target, batch, hp, key, step):
    base, metrics = batch_loss(net, main, target, batch, hp, key, step)
    a_e = batch.aug_action
    on = (a_e >= 0) & (step >= hp.augment_start)
    a = jnp.maximum(a_e, 0)
    logits, q = net.apply(main, batch.history)
    if q_head:
      next_history = extend(batch.history, a)
      _, q_next_selector = net.apply(main, next_history)
      _, q_next_value = net.apply(target, next_history)
      discount = hp.gamma * (1.0 - batch.done.astype(jnp.float32))
      sg = jax.lax.stop_gradient
      ce, td = jax.vmap(lea_loss)(logits, q, a, jnp.full(a.shape, AUG_REWARD, jnp.float32),
                                  discount, sg(q_next_value), sg(q_next_selector), on)
    else:
      ce = jax.vmap(lea_ce_loss)(logits, a, on)
      td = jnp.zeros_like(ce)
    aug = jnp.mean(hp.w_ah * ce + hp.w_aq * td)
    return base + aug, metrics | {"aug_ce_loss": jnp.mean(ce), "aug_q_loss": jnp.mean(td),
                                  "aug_share": jnp.mean(on.astype(jnp.float32))}

  return loss
