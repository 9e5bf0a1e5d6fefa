"""DQN (Mnih et al. 2015) over all items: a SASRec Q network, a flashbax replay buffer and a
hard-copied target network.

  target   y = r + gamma * (1 - done) * max_a' Q_target(s', a')     (stop-gradient)
  L        = huber_delta(y - Q(s, a))   (Huber, as the paper's TD-error clipping to [-1, 1])

Each `update` stores the whole rollout [T, N] in the buffer, then, once it holds `min_buffer`
items, takes `updates_per_iteration` gradient steps on uniform minibatches; every
`target_period` gradient steps the target params become an exact copy of the online params.
The buffer state and the target params travel in `AgentState.extra` as a `DQNExtra`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from jaxrec.agents import optim
from jaxrec.agents.types import AgentState, Transition, strong_types
from jaxrec.errors import ConfigError
from jaxrec.nets.networks import NetConfig, QNetwork


@dataclasses.dataclass(frozen=True)
class DQNConfig:
  net: NetConfig
  learning_rate: float = 1e-3
  gamma: float = 0.9
  buffer_size: int = 100_000  # items (transitions); the oldest are overwritten
  batch_size: int = 256  # minibatch per gradient step, sampled uniformly with replacement
  min_buffer: int = 1_000  # items stored before the first gradient step
  updates_per_iteration: int = 1  # gradient steps per `update` call once the buffer is ready
  # Hard copy every N gradient steps (Mnih et al.), not Polyak averaging: one integer to sweep,
  # and the registry's --target_period flag counts the same unit.
  target_period: int = 100
  max_grad_norm: float = 10.0
  unroll_len: int = 1  # env steps per session between updates
  # Huber loss on the TD error (None = 0.5 * td^2). Rewards are ratings of a few units, so the
  # early TD errors are large; Huber keeps their gradients bounded, as the paper's clipping does.
  huber_delta: float | None = 1.0

  def validate(self) -> None:
    for f in ("buffer_size", "batch_size", "updates_per_iteration", "target_period",
              "unroll_len"):
      if getattr(self, f) <= 0:
        raise ConfigError(f"DQNConfig.{f} must be positive, got {getattr(self, f)}")
    if not 0 <= self.min_buffer <= self.buffer_size or self.batch_size > self.buffer_size:
      raise ConfigError(f"need 0 <= --min_buffer ({self.min_buffer}) <= --buffer_size "
                        f"({self.buffer_size}) and --batch_size ({self.batch_size}) <= "
                        "--buffer_size")


class DQNExtra(NamedTuple):
  """DQN's part of AgentState: the target network and the replay buffer."""
  target_params: Any
  buffer_state: Any  # flashbax TrajectoryBufferState over single Transitions


def q_learning_loss_single(q_tm1: jax.Array, a_tm1: jax.Array, r_t: jax.Array,
                           discount_t: jax.Array, q_t: jax.Array,
                           huber_delta: float | None = 1.0) -> tuple[jax.Array, jax.Array]:
  """One transition's (loss, TD error), rlax-shaped.

  Args:
    q_tm1: [I] online Q(s_{t-1}, .).
    a_tm1: int action taken at t-1.
    r_t: reward after a_tm1.
    discount_t: gamma * (1 - done): 0 where the episode ended (no bootstrap).
    q_t: [I] target-network Q(s_t, .).
    huber_delta: Huber threshold; None = 0.5 * td^2.
  """
  chex.assert_rank([q_tm1, a_tm1, r_t, discount_t, q_t], [1, 0, 0, 0, 1])
  target = jax.lax.stop_gradient(r_t + discount_t * jnp.max(q_t))
  td = target - q_tm1[a_tm1]
  if huber_delta is None:
    return 0.5 * jnp.square(td), td
  return optax.huber_loss(td, delta=huber_delta), td


def td_losses(q_tm1: jax.Array, q_t: jax.Array, action: jax.Array, reward: jax.Array,
              done: jax.Array, gamma: float, huber_delta: float | None):
  """Per-transition (loss [B], td [B]) from Q rows q_tm1, q_t [B, I] and fields [B]."""
  discount = gamma * (1.0 - done.astype(jnp.float32))
  return jax.vmap(q_learning_loss_single, in_axes=(0, 0, 0, 0, 0, None))(
      q_tm1, action, reward.astype(jnp.float32), discount, q_t, huber_delta)


def dqn_loss(net: QNetwork, params, target_params, batch: Transition, gamma: float,
             huber_delta: float | None):
  """Mean TD loss over a minibatch [B] of transitions, and its metrics."""
  q_tm1 = net.apply(params, batch.history)
  q_t = net.apply(target_params, batch.next_history)
  loss, td = td_losses(q_tm1, q_t, batch.action, batch.reward, batch.done, gamma, huber_delta)
  return loss.mean(), {"q_mean": q_tm1.mean(), "td_abs": jnp.abs(td).mean()}


class _Learner(NamedTuple):
  """The carry of the gradient-step scan."""
  params: Any
  opt_state: Any
  target_params: Any
  step: jax.Array


class DQN(optim.GradientAgent):
  """The agent API (jaxrec.agents.types.Agent) for DQN."""

  def __init__(self, cfg: DQNConfig):
    cfg.validate()
    self.cfg = cfg
    self.net = QNetwork(cfg.net)
    self.unroll_len = cfg.unroll_len
    self.optimizer = optim.adam(cfg.learning_rate, cfg.max_grad_norm)
    self.buffer = optim.item_buffer(cfg.buffer_size, cfg.batch_size, cfg.min_buffer)

  def _example_item(self) -> Transition:
    """One transition with the dtypes the buffer stores (`update` casts to them)."""
    return optim.example_transition(self.cfg.net.example_input())

  def init(self, key: jax.Array, params=None) -> AgentState:
    params = self.init_params(key) if params is None else params
    extra = DQNExtra(target_params=params,
                     buffer_state=strong_types(self.buffer.init(self._example_item())))
    return AgentState(params=params, opt_state=self.optimizer.init(params), step=jnp.int32(0),
                      extra=extra)

  def q_values(self, params, history: jax.Array) -> jax.Array:
    """history [N, L] -> Q [N, I]."""
    return self.net.apply(params, history)

  logits = q_values  # acting scores (greedy / epsilon / categorical over Q)

  def _flatten(self, batch: Transition) -> Transition:
    """[T, N, ...] rollout -> [T * N, ...] items with the buffer's dtypes."""
    if batch.action.ndim != 2:
      raise ValueError(f"DQN.update wants a rollout [T, N]; got action {batch.action.shape}")
    if batch.action.size > self.cfg.buffer_size:
      raise ConfigError(f"a rollout of {batch.action.size} transitions does not fit "
                        f"--buffer_size {self.cfg.buffer_size}")
    example = self._example_item()
    return jax.tree.map(lambda x, e: x.reshape((-1,) + e.shape).astype(e.dtype), batch, example)

  def _sgd_step(self, buffer_state, learner: _Learner, key: jax.Array):
    sample = self.buffer.sample(buffer_state, key).experience
    params, opt_state, loss, aux = optim.apply_gradients(
        self.optimizer, lambda p: dqn_loss(self.net, p, learner.target_params, sample,
                                           self.cfg.gamma, self.cfg.huber_delta),
        learner.params, learner.opt_state)
    step = learner.step + 1
    copy = step % self.cfg.target_period == 0
    target = jax.tree.map(lambda p, t: jnp.where(copy, p, t), params, learner.target_params)
    return _Learner(params, opt_state, target, step), {"loss": loss, "q_mean": aux["q_mean"]}

  def update(self, state: AgentState, batch: Transition, key: jax.Array):
    buffer_state = strong_types(self.buffer.add(state.extra.buffer_state, self._flatten(batch)))
    # can_sample: items stored (counting this rollout) >= max(min_buffer, 1), or buffer full.
    ready = self.buffer.can_sample(buffer_state)
    learner = _Learner(state.params, state.opt_state, state.extra.target_params, state.step)
    keys = jax.random.split(key, self.cfg.updates_per_iteration)
    del key

    def learn(learner):
      learner, metrics = jax.lax.scan(lambda c, k: self._sgd_step(buffer_state, c, k),
                                      learner, keys)
      return learner, jax.tree.map(jnp.mean, metrics)

    def skip(learner):
      # Sampling an under-filled buffer would train on padding: nothing changes, metrics are 0.
      return learner, {"loss": jnp.float32(0.0), "q_mean": jnp.float32(0.0)}

    learner, metrics = jax.lax.cond(ready, learn, skip, learner)
    size = jnp.where(buffer_state.is_full, self.cfg.buffer_size, buffer_state.current_index)
    state = AgentState(params=learner.params, opt_state=learner.opt_state, step=learner.step,
                       extra=DQNExtra(learner.target_params, buffer_state))
    return state, metrics | {"buffer_size": size.astype(jnp.float32),
                             "updated": ready.astype(jnp.float32)}
