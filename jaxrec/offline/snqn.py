"""SNQN (Xin et al., "Supervised Advantage Actor-Critic for Sequential Recommendation",
WSDM 2022): SQN (jaxrec/offline/sqn.py) plus sampled negative actions in the TD loss.

As the authors' code trains it (their TensorFlow SNQN / SA2C scripts, "Nov 2021 by XinXin",
arXiv 2111.03474, of which public copies exist; also the PyTorch port
tony-pitchblack/SA2C_code_rectools `Kaggle/SA2C_SASRec_torch.py`): for every transition
`--neg` items are drawn uniformly from the items other than the logged one (with replacement
across the draws); each is an action taken in the *same* state s with reward `--neg_reward`,
whose TD target bootstraps from s itself (the user did not move): neg_reward + gamma *
Q_target(s, argmax_a' Q_main(s, a')), with no end-of-sequence cut (their `targetQ_current_` is
never zeroed and their discount is the constant `--discount`). Each negative's loss is trfl's
`double_qlearning` (0.5 * td^2), summed over the negatives; the step's loss is
mean(ce + positive TD loss + summed negative TD losses) over the batch (their `--weight` on the
two TD terms defaults to 1.0 and is not an option here).

Defaults (jaxrec.offline.run.OfflineConfig), from that code's argparse: 10 negatives (`--neg
10`), negative reward 0 (`--r_negative -0.0`). The shared ones (discount 0.5, lr 0.01, batch
256, sizes) are SQN's (sqn.py); the SA2C scripts' own `--discount` default differs by dataset
(0.2 in the H&M copy, 0.5 in the Kaggle port), and LEA (Sec. 3.3) samples one negative.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from jaxrec.offline.sqn import double_q_learning, sqn_loss


def sample_negatives(key: jax.Array, actions: jax.Array, num_items: int, n: int) -> jax.Array:
  """[B, n] int32: per row, n items drawn uniformly from the num_items - 1 items other than
  actions[row] (draw from num_items - 1 values, shift those at or above the logged item up by
  one: the distribution of the authors' redraw-until-different loop)."""
  u = jax.random.randint(key, actions.shape + (n,), 0, num_items - 1, dtype=jnp.int32)
  return u + (u >= actions[..., None]).astype(jnp.int32)


def negative_td_loss(q_tm1: jax.Array, neg_tm1: jax.Array, neg_r: jax.Array,
                     neg_discount: jax.Array, q_tm1_value: jax.Array,
                     q_tm1_selector: jax.Array) -> jax.Array:
  """One example: sum over the negatives of 0.5 * td^2, each a double-Q TD error whose target
  bootstraps from the same state s. q_tm1 [I] the main copy's Q(s, .); neg_tm1 [n] int;
  neg_r, neg_discount scalars; q_tm1_value [I] the target copy's Q(s, .), q_tm1_selector [I]
  the main copy's (neither differentiated)."""
  chex.assert_rank([q_tm1, neg_tm1, neg_r, neg_discount, q_tm1_value, q_tm1_selector],
                   [1, 1, 0, 0, 1, 1])
  td = jax.vmap(double_q_learning, in_axes=(None, 0, None, None, None, None))(
      jnp.asarray(q_tm1), neg_tm1, neg_r, neg_discount, q_tm1_value, q_tm1_selector)
  return jnp.sum(0.5 * jnp.square(td))


def snqn_loss(logits_tm1: jax.Array, q_tm1: jax.Array, a_tm1: jax.Array, r_t: jax.Array,
              discount_t: jax.Array, q_t_value: jax.Array, q_t_selector: jax.Array,
              neg_tm1: jax.Array, neg_r: jax.Array, neg_discount: jax.Array,
              q_tm1_value: jax.Array, q_tm1_selector: jax.Array
              ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """One example: (cross-entropy, positive TD loss, summed negative TD losses); the first five
  arguments and the two Q(s', .) are sqn_loss's, the last five negative_td_loss's."""
  ce, td_pos = sqn_loss(logits_tm1, q_tm1, a_tm1, r_t, discount_t, q_t_value, q_t_selector)
  td_neg = negative_td_loss(q_tm1, neg_tm1, neg_r, neg_discount, q_tm1_value, q_tm1_selector)
  return ce, td_pos, td_neg


def loss_inputs(net, main, target, batch, hp, key) -> tuple[jax.Array, ...]:
  """The batched arguments of snqn_loss for a minibatch, in its order: the main copy's ce
  logits and Q at s, the logged action, reward and discount, the target / main copies' Q at s'
  (not differentiated), the negatives drawn from `key` [B, n], their reward and discount, and
  the target / main copies' Q at s (not differentiated)."""
  logits, q = net.apply(main, batch.history)
  _, q_next_selector = net.apply(main, batch.next_history)
  _, q_next_value = net.apply(target, batch.next_history)
  _, q_value = net.apply(target, batch.history)
  negatives = sample_negatives(key, batch.action, q.shape[-1], hp.neg)
  b = batch.action.shape[0]
  discount = hp.gamma * (1.0 - batch.done.astype(jnp.float32))
  sg = jax.lax.stop_gradient
  return (logits, q, batch.action, batch.reward, discount, sg(q_next_value),
          sg(q_next_selector), negatives, jnp.full((b,), hp.neg_reward, jnp.float32),
          jnp.full((b,), hp.gamma, jnp.float32), sg(q_value), sg(q))


def batch_loss(net, main, target, batch, hp, key, step):
  """The learner interface (jaxrec.offline.learners): mean(ce + TD loss + negatives' TD
  losses) of the main copy; the target copy evaluates Q(s', .) and Q(s, .)."""
  del step
  ce, td_pos, td_neg = jax.vmap(snqn_loss)(*loss_inputs(net, main, target, batch, hp, key))
  return jnp.mean(ce + td_pos + td_neg), {"ce_loss": jnp.mean(ce), "q_loss": jnp.mean(td_pos),
                                          "neg_q_loss": jnp.mean(td_neg)}
