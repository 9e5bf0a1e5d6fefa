"""SAC (Xin et al., "Self-Supervised Reinforcement Learning for Recommender Systems",
SIGIR 2020, the "self-supervised actor-critic"): SQN (jaxrec/offline/sqn.py) for a warm-up,
then the supervised head's cross-entropy weighted by the stop-gradient Q(s, a) of the logged
action, beside the same double-Q TD loss.

As the authors' code trains it (the SAC scripts of their SQN release, e.g. the copy in
alfa-labarca/RL-Proxy-Models `RC15/RL approaches/SAC.py`): while the global update count is
below 15,000 (`if total_step < 15000`, hard-coded) the step's loss is SQN's, mean(ce + TD loss);
from then on it is mean(stop_gradient(Q_main(s, a)) * ce + TD loss), with Q from the main
copy's Q head and no clip or normalisation of that weight. Each phase has its own Adam
optimizer (their opt1 / opt2, both at `--lr`; the script parses an `--lr_2` it never uses), so
the second phase starts from fresh Adam moments (jaxrec.offline.loop.two_phase).

Defaults: warm-up 15,000 updates (`--warmup`, the hard-coded switch above); the rest is SQN's.
With the default synthetic dataset (123 updates per epoch) a run shorter than 122 epochs never
leaves the warm-up and trains as sqn does (the 10-epoch run in docs/offline.md: its metrics equal
sqn's bit for bit).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from jaxrec.offline.sqn import sqn_loss


def sac_loss(logits_tm1: jax.Array, q_tm1: jax.Array, a_tm1: jax.Array, r_t: jax.Array,
             discount_t: jax.Array, q_t_value: jax.Array, q_t_selector: jax.Array,
             warm: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """One example: (weighted cross-entropy, TD loss, the ce weight). The weight is 1 while
  `warm` (a bool scalar: the update count is below the warm-up), else stop_gradient(q_tm1[a_tm1]).
  The other arguments are sqn_loss's."""
  chex.assert_rank(warm, 0)
  ce, td = sqn_loss(logits_tm1, q_tm1, a_tm1, r_t, discount_t, q_t_value, q_t_selector)
  weight = jnp.where(warm, 1.0, jax.lax.stop_gradient(q_tm1[a_tm1]))
  return weight * ce, td, weight


def batch_loss(net, main, target, batch, hp, key, step):
  """The learner interface (jaxrec.offline.learners): mean(weighted ce + TD loss) of the main
  copy; `step` (updates so far) below hp.warmup: SQN's loss."""
  del key
  logits, q = net.apply(main, batch.history)
  _, q_next_selector = net.apply(main, batch.next_history)
  _, q_next_value = net.apply(target, batch.next_history)
  discount = hp.gamma * (1.0 - batch.done.astype(jnp.float32))
  warm = jnp.broadcast_to(step < hp.warmup, batch.action.shape)
  wce, td, weight = jax.vmap(sac_loss)(logits, q, batch.action, batch.reward, discount,
                                       jax.lax.stop_gradient(q_next_value),
                                       jax.lax.stop_gradient(q_next_selector), warm)
  return jnp.mean(wce + td), {"ce_loss": jnp.mean(wce), "q_loss": jnp.mean(td),
                              "ce_weight": jnp.mean(weight)}
