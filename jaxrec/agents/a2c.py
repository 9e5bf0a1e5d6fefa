"""A2C exactly as the paper (Eq. 6-10): one SASRec encoder, an actor over all items and a
Q critic over all items.

  target   y = r + gamma * (1 - done) * max_a' Q(s', a')        (stop-gradient)
  L_Q      = (y - Q(s, a))^2                                     (Eq. 8)
  A(s, a)  = stop_gradient(y - Q(s, a))                          (Eq. 9)
  L_A      = -log pi(a | s) * A(s, a)                            (Eq. 6, 10)
  L        = L_A + L_Q (+ optional entropy bonus, 0 by default: not in the paper)

The losses are written for one transition (rlax style) and vmapped by the caller; `mix_logp`
lets A-iALP_ap (Eq. 15) swap in the log-probability of a policy mixture.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import chex
import jax
import jax.numpy as jnp
import optax

from jaxrec.agents import acting
from jaxrec.agents.types import AgentState, Transition
from jaxrec.errors import ConfigError
from jaxrec.nets.networks import ActorCritic, NetConfig


@dataclasses.dataclass(frozen=True)
class A2CConfig:
  net: NetConfig
  learning_rate: float = 1e-3
  gamma: float = 0.9
  entropy_coef: float = 0.0
  max_grad_norm: float = 10.0
  unroll_len: int = 1  # the paper updates after every env step
  # The critic's bootstrap: "max" = max_a' Q(s', a') (paper Eq. 8-9); "expected" =
  # sum_a' pi(a'|s') Q(s', a') (the on-policy actor-critic / expected-SARSA target; the max over
  # ~1,000 untrained Q outputs overestimates, and that bias is all the actor sees early on).
  critic_target: str = "max"


def a2c_loss_single(logp_a: jax.Array, q_sa: jax.Array, q_next_max: jax.Array,
                    reward: jax.Array, done: jax.Array, gamma: float):
  """Per-transition (actor loss, critic loss, TD error), all scalars."""
  chex.assert_rank([logp_a, q_sa, q_next_max, reward, done], 0)
  target = jax.lax.stop_gradient(reward + gamma * (1.0 - done) * q_next_max)
  td = target - q_sa
  actor = -logp_a * jax.lax.stop_gradient(td)
  return actor, jnp.square(td), td


CRITIC_TARGETS = ("max", "expected")


def a2c_losses(net: ActorCritic, params, batch: Transition, gamma: float, entropy_coef: float,
               log_policy: Callable | None = None, critic_target: str = "max"):
  """Mean losses over a batch [..., ...] of transitions. `log_policy(logits) -> log pi` maps the
  actor's logits to the acting policy's log-probabilities (default log_softmax);
  critic_target: "max" (paper Eq. 8) or "expected" (under the acting policy at s')."""
  if critic_target not in CRITIC_TARGETS:
    raise ConfigError(f"--critic_target must be one of {', '.join(CRITIC_TARGETS)}; got "
                      f"{critic_target!r}")
  flat = jax.tree_util.tree_map(lambda x: x.reshape((-1,) + x.shape[batch.action.ndim:]), batch)
  log_policy = log_policy or jax.nn.log_softmax
  logits, q = net.apply(params, flat.history)
  logits_next, q_next = net.apply(params, flat.next_history)
  if critic_target == "max":
    v_next = q_next.max(axis=1)
  else:
    v_next = jnp.sum(jnp.exp(log_policy(logits_next)) * q_next, axis=1)
  logp = log_policy(logits)
  idx = flat.action[:, None]
  logp_a = jnp.take_along_axis(logp, idx, axis=1)[:, 0]
  q_sa = jnp.take_along_axis(q, idx, axis=1)[:, 0]
  actor, critic, td = jax.vmap(a2c_loss_single, in_axes=(0, 0, 0, 0, 0, None))(
      logp_a, q_sa, v_next, flat.reward, flat.done.astype(jnp.float32), gamma)
  entropy = -jnp.sum(jnp.exp(logp) * logp, axis=-1).mean()
  loss = actor.mean() + critic.mean() - entropy_coef * entropy
  return loss, {"actor_loss": actor.mean(), "critic_loss": critic.mean(),
                "td_abs": jnp.abs(td).mean(), "entropy": entropy}


class A2C:
  """The agent API (jaxrec.agents.types.Agent) for A2C."""

  def __init__(self, cfg: A2CConfig):
    self.cfg = cfg
    self.net = ActorCritic(cfg.net)
    self.unroll_len = cfg.unroll_len
    self.optimizer = optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm),
                                 optax.adam(cfg.learning_rate))

  def init_params(self, key: jax.Array):
    return self.net.init(key, jnp.full((1, self.cfg.net.history_len), -1, jnp.int32))

  def init(self, key: jax.Array, params=None) -> AgentState:
    params = self.init_params(key) if params is None else params
    return AgentState(params=params, opt_state=self.optimizer.init(params), step=jnp.int32(0))

  def policy_params(self, state: AgentState):
    return state.params

  def logits(self, params, history: jax.Array) -> jax.Array:
    return self.net.apply(params, history)[0]

  def act(self, params, history, key, strategy, epsilon=0.0, allowed=None):
    return acting.select(key, self.logits(params, history), strategy, epsilon, allowed)

  def update(self, state: AgentState, batch: Transition, key: jax.Array):
    del key
    grad_fn = jax.value_and_grad(a2c_losses, argnums=1, has_aux=True)
    (loss, metrics), grads = grad_fn(self.net, state.params, batch, self.cfg.gamma,
                                     self.cfg.entropy_coef, None, self.cfg.critic_target)
    updates, opt_state = self.optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return state._replace(params=params, opt_state=opt_state, step=state.step + 1), (
        metrics | {"loss": loss})
