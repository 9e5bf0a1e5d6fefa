"""Reference policies for every simulator, the yardsticks of a results table (random = 0, planner =
1 on a normalised score); greedy, safe_greedy and planner read the true user model and quit rule,
so they are upper references that no deployable agent could run. Built by `make_policy`."""

from __future__ import annotations

import functools
from typing import Callable

import chex
import jax
import jax.numpy as jnp

from jaxrec.envs.base import EnvState, RecEnv, leave_window
from jaxrec.errors import ConfigError

POLICIES = ("random", "popularity", "greedy", "safe_greedy", "planner")

Policy = Callable[[jax.Array, jax.Array, EnvState, "jax.Array | None"], jax.Array]


def _or_all(mask: jax.Array) -> jax.Array:
  """[I] bool -> mask, or every item where mask is empty (a row must still act)."""
  return mask | ~jnp.any(mask)


def _argmax_in(scores: jax.Array, mask: jax.Array) -> jax.Array:
  """The best item of a non-empty [I] bool mask (the first on ties): int32."""
  # max, then the first index reaching it: two plain reductions, ~3x faster than jnp.argmax's
  # variadic reduce on CPU at I = 1000, and the planner runs this N * K * horizon times a step.
  s = jnp.where(mask, scores, -jnp.inf)
  hit = s == jnp.max(s)
  return jnp.min(jnp.where(hit, jnp.arange(s.shape[0]), s.shape[0])).astype(jnp.int32)


def close_pairs(env: RecEnv, params) -> jax.Array:
  """[I, I] bool: item pairs within the similarity quit's distance beta (strictly). Built once per
  policy, so a step gathers W rows instead of computing an [I, W, d] difference (per candidate)."""
  q = env.quit_params(params)
  v = env.item_vectors(params)  # [I, d]
  sq = jnp.sum(v * v, -1)
  d2 = sq[:, None] + sq[None, :] - 2.0 * jnp.matmul(v, v.T, precision="highest")
  # The expansion is not exactly 0 on the diagonal, too_similar's difference is.
  dist = jnp.where(jnp.eye(v.shape[0], dtype=bool), 0.0, jnp.sqrt(jnp.maximum(d2, 0.0)))
  return dist < q.beta


def safe_mask(env: RecEnv, params, close: jax.Array, state: EnvState,
              rewards: jax.Array) -> jax.Array:
  """[I] bool: items whose recommendation in `state` (one session) would trigger neither the
  similarity quit nor the low-reward quit. close: [I, I] `close_pairs(env, params)`; rewards:
  [I] `env.all_rewards(params, state)`."""
  window = (state.recent >= 0) & leave_window(env.window_rule, env.quit_window, state.t)
  similar = jnp.any(close[jnp.maximum(state.recent, 0)] & window[:, None], axis=0)
  return ~similar & (rewards >= env.quit_params(params).min_reward)


def _safe_greedy(env: RecEnv, params, close: jax.Array, state: EnvState,
                 mask: jax.Array) -> jax.Array:
  """Argmax reward among the safe items of `mask` [I] (non-empty); plain greedy if none is safe."""
  rewards = env.all_rewards(params, state)
  safe = safe_mask(env, params, close, state, rewards) & mask
  return _argmax_in(rewards, jnp.where(jnp.any(safe), safe, mask))


def _plan(env: RecEnv, params, close: jax.Array, num_candidates: int, horizon: int,
          exclude_used: bool, key: jax.Array, state: EnvState, mask: jax.Array) -> jax.Array:
  """One-step lookahead with a safe-greedy base policy (one session): of the top `num_candidates`
  items of `mask` [I] (safe ones first, then by immediate reward), the one whose simulated
  episode of at most `horizon` steps earns the most (undiscounted, counted until the simulated
  quit; ties: the higher immediate reward). exclude_used: the rollout never repeats its items."""
  rewards = env.all_rewards(params, state)
  safe = safe_mask(env, params, close, state, rewards)
  # Safe first: the base policy's own action is then candidate 0, so the lookahead can only
  # improve on safe greedy (when the horizon covers the episode), and no slot goes to an item
  # that ends the episode at once. The shift by the reward span keeps the order within each part.
  span = jnp.max(rewards) - jnp.min(rewards) + 1.0
  _, cands = jax.lax.top_k(jnp.where(mask, jnp.where(safe, rewards, rewards - span), -jnp.inf),
                           num_candidates)

  def rollout(key: jax.Array, a: jax.Array) -> jax.Array:
    k_first, k_rest = jax.random.split(key)
    _, s, r, done, _ = env.step_env(k_first, state, a, params)

    def _step(carry, k):
      s, ret, alive, fresh = carry  # fresh [I]: what the base policy may pick
      b = _safe_greedy(env, params, close, s, _or_all(fresh))
      _, s, r, done, _ = env.step_env(k, s, b, params)
      fresh = fresh.at[b].set(False) if exclude_used else fresh
      # The simulated episode goes on past its quit (step_env never resets) but earns nothing.
      return (s, ret + jnp.where(alive, r, 0.0), alive & ~done, fresh), None

    fresh = mask.at[a].set(False) if exclude_used else mask
    (_, ret, _, _), _ = jax.lax.scan(_step, (s, r, ~done, fresh),
                                     jax.random.split(k_rest, horizon - 1))
    return ret

  returns = jax.vmap(rollout)(jax.random.split(key, num_candidates), cands)
  valid = mask[cands]  # False only for top_k's padding when mask has < num_candidates items
  best = valid & (returns == jnp.max(jnp.where(valid, returns, -jnp.inf)))
  return cands[_argmax_in(rewards[cands], best)]


def make_policy(name: str, env: RecEnv, env_params, *, popularity: jax.Array | None = None,
                num_candidates: int = 8, horizon: int = 10) -> Policy:
  """The reference policy `name` (one of POLICIES) for `env` with `env_params`.

  popularity: [I] float, higher = more popular (required for "popularity"). num_candidates,
  horizon: the planner's candidates per step and simulated episode length (first step included).
  Returns policy(key, history [N, L] int32, state: EnvState batched over N, allowed [N, I] bool
  or None = every item) -> actions [N] int32, always allowed items (any item where a row allows
  none). Pure and jittable.
  """
  num_items = env.num_actions
  if name not in POLICIES:
    raise ConfigError(f"policy must be one of {', '.join(POLICIES)}; got {name!r}")
  if name == "popularity":
    if popularity is None:
      raise ConfigError("the popularity policy needs popularity= ([I] item scores, higher = "
                        "more popular)")
    if jnp.shape(popularity) != (num_items,):
      raise ConfigError(f"popularity must have shape ({num_items},) (one score per item); got "
                        f"{jnp.shape(popularity)}")
    popularity = jnp.asarray(popularity, jnp.float32)
  if name == "planner" and (num_candidates <= 0 or horizon <= 0):
    raise ConfigError(f"planner needs num_candidates > 0 and horizon > 0; got {num_candidates}, "
                      f"{horizon}")
  num_candidates = min(num_candidates, num_items)
  # [I, I] bool, built once here rather than per call (env_params are fixed for the policy).
  close = close_pairs(env, env_params) if name in ("safe_greedy", "planner") else None

  def one(exclude_used: bool, key: jax.Array, history: jax.Array, state: EnvState,
          mask: jax.Array) -> jax.Array:
    if name == "random":
      return jax.random.categorical(key, jnp.where(mask, 0.0, -jnp.inf)).astype(jnp.int32)
    if name == "popularity":
      seen = jnp.any(jnp.arange(num_items)[:, None] == history[None, :], axis=1)  # -1 never hits
      unseen = mask & ~seen
      return _argmax_in(popularity, jnp.where(jnp.any(unseen), unseen, mask))
    if name == "greedy":
      return _argmax_in(env.all_rewards(env_params, state), mask)
    if name == "safe_greedy":
      return _safe_greedy(env, env_params, close, state, mask)
    return _plan(env, env_params, close, num_candidates, horizon, exclude_used, key, state,
                 mask)

  def policy(key: jax.Array, history: jax.Array, state: EnvState,
             allowed: jax.Array | None = None) -> jax.Array:
    n = history.shape[0]
    chex.assert_shape(history, (n, env.history_len))
    if allowed is not None:
      chex.assert_shape(allowed, (n, num_items))
    # A given mask is the evaluation's "not yet recommended" set, so the planner's rollouts obey
    # it too; without one the episode may repeat items, and so may the rollouts (their base
    # policy is then exactly safe_greedy, which the lookahead improves on).
    exclude_used = allowed is not None
    allowed = jnp.ones((n, num_items), bool) if allowed is None else allowed
    masks = jax.vmap(_or_all)(allowed)
    return jax.vmap(functools.partial(one, exclude_used))(jax.random.split(key, n), history,
                                                          state, masks)

  return policy
