"""The fused online loop (PureJaxRL shape): act -> env step -> store -> update, for N vmapped
sessions, compiled into one `lax.scan` per epoch. Episode statistics stay on device.

  runner = init_runner(key, env_params)
  runner, curve = train_epoch(runner, env_params)   # jitted; iterations x unroll_len steps
  metrics = evaluate(agent, params, test_env, test_params, key, ...)   # paper Sec. 5.3
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxrec.agents.types import Agent, AgentState, Transition
from jaxrec.envs.base import history_input
from jaxrec.train.evaluation import agent_policy, evaluate_policy

CURVE_WINDOW = 20  # the paper's learning curves: mean of the most recent 20 finished episodes
FINITE = "finite"  # per-update curve key: params and losses after the update are all finite


@dataclasses.dataclass(frozen=True)
class LoopConfig:
  num_sessions: int = 256
  iterations_per_epoch: int = 10
  strategy: str = "categorical"
  epsilon: float = 0.1


class RunnerState(NamedTuple):
  agent: AgentState
  env_state: Any
  history: Any  # [N, L] the current observations (items; with rewards: (items, rewards))
  key: jax.Array
  recent_returns: jax.Array  # [CURVE_WINDOW] most recent finished episodes, ring
  recent_lengths: jax.Array  # [CURVE_WINDOW]
  num_finished: jax.Array  # int32 episodes finished so far
  env_steps: jax.Array  # int32 env steps so far (all sessions)


def all_finite(tree) -> jax.Array:
  """bool scalar: every float leaf of `tree` is free of NaN and inf (the NaN guard)."""
  leaves = [jnp.isfinite(x).all() for x in jax.tree_util.tree_leaves(tree)
            if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


def _push_finished(returns, lengths, count, ep_return, ep_length, done):
  """Writes the episodes finished this step (in session order) into the ring buffers."""
  w = returns.shape[0]
  done = done.astype(jnp.int32)
  rank = jnp.cumsum(done) - 1  # 0.. among finished
  total = done.sum()
  keep = (done > 0) & (rank >= total - w)  # only the last w of them can survive
  slot = jnp.where(keep, (count + rank) % w, w)  # w = out of bounds -> dropped
  returns = returns.at[slot].set(ep_return, mode="drop")
  lengths = lengths.at[slot].set(ep_length.astype(jnp.float32), mode="drop")
  return returns, lengths, count + total


def reads_rewards(agent) -> bool:
  """Whether the agent's network takes (items, rewards) (NetConfig.reward_handle); a loaded
  export (no config class) says so itself."""
  net = getattr(getattr(agent, "cfg", None), "net", None)
  return bool(net.with_rewards) if net is not None else bool(getattr(agent, "with_rewards"))


def make_train(cfg: LoopConfig, agent: Agent, env):
  """-> (init_runner(key, env_params), train_epoch(runner, env_params)), pure functions.

  env_params are arguments, not closed-over constants: XLA would otherwise embed the user
  model (or a [U, I] reward table) into the program, and one compile could not serve the
  train and test envs."""
  n = cfg.num_sessions
  vstep = jax.vmap(env.step, in_axes=(0, 0, 0, None))
  with_rewards = reads_rewards(agent)

  def init_runner(key: jax.Array, env_params, agent_state: AgentState | None = None
                  ) -> RunnerState:
    k_agent, k_env, key = jax.random.split(key, 3)
    if agent_state is None:
      agent_state = agent.init(k_agent)
    obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(k_env, n),
                                                           env_params)
    first, _ = history_input(env, env_params, with_rewards)
    return RunnerState(agent=agent_state, env_state=env_state, history=first(obs.history),
                       key=key,
                       recent_returns=jnp.zeros(CURVE_WINDOW),
                       recent_lengths=jnp.zeros(CURVE_WINDOW), num_finished=jnp.int32(0),
                       env_steps=jnp.int32(0))

  def _env_step(runner: RunnerState, env_params, next_input):
    key, k_act, k_env = jax.random.split(runner.key, 3)
    acting_params = agent.policy_params(runner.agent)
    if getattr(agent, "acts_with_values", False):
      action, value = agent.act_value(acting_params, runner.history, k_act, cfg.strategy,
                                      cfg.epsilon)
    else:
      action = agent.act(acting_params, runner.history, k_act, cfg.strategy, cfg.epsilon)
      value = None
    obs, env_state, reward, done, info = vstep(jax.random.split(k_env, n), runner.env_state,
                                               action, env_params)
    rets, lens, count = _push_finished(runner.recent_returns, runner.recent_lengths,
                                       runner.num_finished, info["episode_return"],
                                       info["episode_length"], done)
    history = next_input(runner.history, obs.history, reward, done)
    transition = Transition(runner.history, action, reward, done, history, value)
    runner = runner._replace(env_state=env_state, history=history, key=key,
                             recent_returns=rets, recent_lengths=lens, num_finished=count,
                             env_steps=runner.env_steps + n)
    return runner, transition

  def _iteration(runner: RunnerState, env_params, next_input):
    runner, batch = jax.lax.scan(lambda r, _: _env_step(r, env_params, next_input), runner,
                                 None, agent.unroll_len)
    key, k_update = jax.random.split(runner.key)
    agent_state, metrics = agent.update(runner.agent, batch, k_update)
    runner = runner._replace(agent=agent_state, key=key)
    have = jnp.minimum(runner.num_finished, CURVE_WINDOW)
    denom = jnp.maximum(have, 1).astype(jnp.float32)
    point = {"env_steps": runner.env_steps,
             "curve_return": runner.recent_returns.sum() / denom,  # zeros fill unused slots
             "curve_length": runner.recent_lengths.sum() / denom,
             "mean_reward": batch.reward.mean()} | metrics
    point[FINITE] = all_finite((agent_state.params, metrics))
    return runner, point

  def train_epoch(runner: RunnerState, env_params):
    """iterations_per_epoch updates; returns the runner and one curve point per update
    (point[FINITE] False: that update produced NaN/inf params or losses)."""
    _, next_input = history_input(env, env_params, with_rewards)  # bounds: once per call
    return jax.lax.scan(lambda r, _: _iteration(r, env_params, next_input), runner, None,
                        cfg.iterations_per_epoch)

  return init_runner, train_epoch


def evaluate(agent: Agent, params, env, env_params, key: jax.Array, num_sessions: int,
             max_steps: int, strategy: str, epsilon: float = 0.0, mode: str = "FB",
             popularity: jax.Array | None = None) -> dict:
  """One episode in each of num_sessions fresh sessions (no auto-reset) driven by the agent:
  the paper's Return, Length and average reward and the diagnostics of
  `jaxrec.train.evaluation` under the evaluation `mode` (FB, NX_0, NX_k)."""
  return evaluate_policy(agent_policy(agent, params, strategy, epsilon), env, env_params, key,
                         num_sessions, max_steps, mode, popularity,
                         with_rewards=reads_rewards(agent))
