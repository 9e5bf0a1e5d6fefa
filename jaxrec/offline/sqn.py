"""SQN (Xin et al., "Self-Supervised Reinforcement Learning for Recommender Systems",
SIGIR 2020): the supervised head's cross-entropy plus a one-step double-Q-learning TD loss on a
Q head that shares the encoder.

As the authors' code trains it (their SQN scripts, e.g. the copy in alfa-labarca/RL-Proxy-Models
`RC15/RL approaches/SQN.py`, built on their release): two network copies; each step a fair coin
picks which one is the main network (updated, with its own Adam state) and which the target;
the bootstrap is the target copy's Q(s', .) at the action the main copy's Q(s', .) ranks first,
zero where the sequence ends; the TD loss is trfl's `double_qlearning` (0.5 * td^2) and the
step's loss is mean(ce + td loss) over the batch (no weight between the two).

Defaults (jaxrec.offline.run.OfflineConfig), each from that code's argparse: discount 0.5
(`--discount`), Adam learning rate 0.01 (`--lr`), batch 256 (`--batch_size`), hidden size 64
(`--hidden_factor`), SASRec 1 block / 1 head (`--num_blocks`, `--num_heads`); state length 10
(its data statistics' state_size; also LEA Sec. 5.1); its SASRec dropout 0.1
(`--dropout_rate`: the embedded input, attention weights, feed-forward outputs) in every
training forward (`--dropout`, jaxrec.offline.loop.TrainingNet), never in evaluation.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from jaxrec.offline.normal import cross_entropy


def double_q_learning(q_tm1: jax.Array, a_tm1: jax.Array, r_t: jax.Array,
                      discount_t: jax.Array, q_t_value: jax.Array,
                      q_t_selector: jax.Array) -> jax.Array:
  """One example's double-Q TD error (rlax's `double_q_learning`, van Hasselt 2010):
  r_t + discount_t * q_t_value[argmax q_t_selector] - q_tm1[a_tm1], the target not
  differentiated. q_tm1, q_t_value, q_t_selector [I]; a_tm1 int; r_t, discount_t scalars."""
  chex.assert_rank([q_tm1, a_tm1, r_t, discount_t, q_t_value, q_t_selector],
                   [1, 0, 0, 0, 1, 1])
  target = r_t + discount_t * q_t_value[jnp.argmax(q_t_selector)]
  return jax.lax.stop_gradient(target) - q_tm1[a_tm1]


def sqn_loss(logits_tm1: jax.Array, q_tm1: jax.Array, a_tm1: jax.Array, r_t: jax.Array,
             discount_t: jax.Array, q_t_value: jax.Array,
             q_t_selector: jax.Array) -> tuple[jax.Array, jax.Array]:
  """One example: (cross-entropy of the ce head, 0.5 * double-Q TD error^2 of the Q head).
  logits_tm1 [I] the ce head at s; discount_t = gamma * (1 - done)."""
  td = double_q_learning(q_tm1, a_tm1, r_t, discount_t, q_t_value, q_t_selector)
  return cross_entropy(logits_tm1, a_tm1), 0.5 * jnp.square(td)


def batch_loss(net, main, target, batch, hp, key, step):
  """The learner interface (jaxrec.offline.learners): mean(ce + TD loss) of the main copy;
  the target copy only evaluates Q(s', .)."""
  del key, step
  logits, q = net.apply(main, batch.history)
  _, q_next_selector = net.apply(main, batch.next_history)
  _, q_next_value = net.apply(target, batch.next_history)
  discount = hp.gamma * (1.0 - batch.done.astype(jnp.float32))
  ce, td = jax.vmap(sqn_loss)(logits, q, batch.action, batch.reward, discount,
                              jax.lax.stop_gradient(q_next_value),
                              jax.lax.stop_gradient(q_next_selector))
  return jnp.mean(ce + td), {"ce_loss": jnp.mean(ce), "q_loss": jnp.mean(td)}
