"""Evaluation episodes in a test env: the paper's metrics (Sec. 5.3), the peer protocol's
modes and the diagnostics that say why returns differ, all inside one jitted scan.

Modes (EasyRL4Rec, src/core/collector/collector_set.py):
  FB     free browsing: the env's own rule ends the episode; repeats allowed.
  NX_0   items already recommended in the episode are masked out of the policy's choice;
         the env's rule still ends the episode.
  NX_k   masked as NX_0, and the env's ending is overridden: ignored before step k, forced at
         step k (the peer's `force_length`; its logs use k = 10), so every episode has k steps.

Metrics (one episode per fresh session, no auto-reset):
  R, Len, Ravg, R_std   return, length, mean of per-episode R / Len, std of R (paper)
  ctr                   mean R / mean Len (the peer's ctr: reward per step over all episodes)
  quit_low_reward, quit_similar, quit_max_len, quit_forced
                        share of episodes whose last step carried each cause (a step can
                        carry two); quit_forced: ended by NX_k
  distinct              distinct items per episode (mean); repeats in an episode lower it
  CV, CV_turn           distinct items over all episodes / catalog size, and / all actions
  Diversity             per episode, the mean over item pairs of 1 - 1 / (1 + distance)
                        (distance: the env's leave-rule item vectors; 1.0 for one item), mean
  Novelty               per episode, the mean of -ln(popularity) of its items, mean (only
                        when `popularity` is given; see item_popularity)
"""

from __future__ import annotations

import os
import re
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxrec.errors import ConfigError
from jaxrec.envs.base import history_input

# policy(key, history [N, L] int32, state: EnvState batched over N, allowed [N, I] bool | None)
#   -> actions [N] int32
Policy = Callable

_MODE = re.compile(r"^(FB|NX_(\d+))$")


def parse_mode(mode: str) -> tuple[bool, int]:
  """'FB' | 'NX_<k>' -> (mask recommended items, forced length k; 0 = the env's rule)."""
  m = _MODE.match(mode or "")
  if m is None:
    raise ConfigError(f"--eval_mode must be FB, NX_0 or NX_<k> (e.g. NX_10); got {mode!r}")
  if m.group(1) == "FB":
    return False, 0
  return True, int(m.group(2))


def eval_modes(modes: str) -> tuple[str, ...]:
  """'FB,NX_0,NX_10' -> ('FB', 'NX_0', 'NX_10'), each checked, no repeats."""
  out = tuple(m.strip() for m in (modes or "").split(","))
  for m in out:
    parse_mode(m)
  if len(set(out)) != len(out):
    raise ConfigError(f"--eval_mode lists a mode twice: {modes!r}")
  return out


def item_popularity(seq_items: np.ndarray, offsets: np.ndarray, ratings: np.ndarray | None,
                    num_items: int, min_rating: float = 3.0) -> np.ndarray:
  """[I] float32 share of users with a rating >= min_rating of the item (every interaction
  where the data has no ratings): EasyRL4Rec's Coat popularity (CoatData.get_item_popularity).

  The peer's -ln(0) would be inf for an item nobody liked; such items get half a user."""
  users = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
  keep = np.ones(len(seq_items), bool) if ratings is None or not len(ratings) else (
      ratings >= min_rating)
  pairs = np.unique(np.stack([users[keep], seq_items[keep]]), axis=1)
  counts = np.bincount(pairs[1], minlength=num_items).astype(np.float64)
  n_users = max(len(offsets) - 1, 1)
  return (np.maximum(counts, 0.5) / n_users).astype(np.float32)


def env_popularity(env_dir: str) -> np.ndarray | None:
  """[I] the item popularity of an env directory's logged data (the Novelty metric); None for
  an env directory that carries no dataset.npz (hand-built envs: no Novelty then)."""
  from jaxrec.envs import build
  if not os.path.exists(os.path.join(env_dir, "dataset.npz")):
    return None
  ds = build.load_dataset_of(env_dir)
  return item_popularity(ds.seq_items, ds.offsets, ds.ratings, ds.num_items)


def _distinct(rows: jax.Array) -> jax.Array:
  """rows [N, T] int32 (-1 = none) -> [N] number of distinct valid items per row."""
  s = jnp.sort(rows, axis=1)
  new = jnp.concatenate([jnp.ones_like(s[:, :1], bool), s[:, 1:] != s[:, :-1]], axis=1)
  return jnp.sum(new & (s >= 0), axis=1)


def _diversity(recs: jax.Array, item_vecs: jax.Array) -> jax.Array:
  """recs [N, T] (-1 = none) -> [N] mean over valid pairs of 1 - 1 / (1 + distance)."""
  valid = recs >= 0
  v = item_vecs[jnp.maximum(recs, 0)]  # [N, T, d]
  sq = jnp.sum(v * v, axis=-1)
  gram = jnp.einsum("ntd,nsd->nts", v, v)
  dist = jnp.sqrt(jnp.maximum(sq[:, :, None] + sq[:, None, :] - 2.0 * gram, 0.0))
  t = recs.shape[1]
  pair = valid[:, :, None] & valid[:, None, :] & (jnp.arange(t)[:, None] < jnp.arange(t))[None]
  n = pair.sum(axis=(1, 2))
  total = jnp.sum(jnp.where(pair, 1.0 - 1.0 / (1.0 + dist), 0.0), axis=(1, 2))
  return jnp.where(n > 0, total / jnp.maximum(n, 1), 1.0)


def evaluate_policy(policy: Policy, env, env_params, key: jax.Array, num_sessions: int,
                    max_steps: int, mode: str = "FB", popularity: jax.Array | None = None,
                    with_rewards: bool = False) -> dict:
  """One episode in each of num_sessions fresh sessions of `env` driven by `policy`; -> the
  metrics of the module docstring (scalars). Jittable; `mode` and the sizes are static.
  with_rewards: the policy's history is (items, normalised rewards), as a network with a
  reward input reads it (jaxrec.envs.base.history_input)."""
  mask, force = parse_mode(mode)
  steps = force if force else max_steps
  n, num_items = num_sessions, env.num_actions
  k_reset, key = jax.random.split(key)
  obs, state = jax.vmap(env.reset_env, in_axes=(0, None))(jax.random.split(k_reset, n),
                                                          env_params)
  vstep = jax.vmap(env.step_env, in_axes=(0, 0, 0, None))
  rows = jnp.arange(n)
  first, next_input = history_input(env, env_params, with_rewards)

  def body(carry, xs):
    state, history, alive, ret, length, recs, causes = carry
    t, k = xs
    allowed = None
    if mask:  # -1 slots write to index num_items: dropped
      allowed = jnp.ones((n, num_items), bool).at[
          rows[:, None], jnp.where(recs >= 0, recs, num_items)].set(False, mode="drop")
    # The policy gets k itself (what it got before modes existed); the env a key of its own.
    action = policy(k, history, state, allowed)
    obs, state, reward, done, info = vstep(jax.random.split(jax.random.fold_in(k, 1), n),
                                           state, action, env_params)
    forced = jnp.zeros_like(done)
    if force:
      done = forced = jnp.broadcast_to(t + 1 >= force, done.shape)
    ending = alive & done
    cause = jnp.stack([info["quit_low_reward"], info["quit_similar"], info["truncated"],
                       forced], axis=1)
    causes = causes | (ending[:, None] & cause)
    ret = ret + jnp.where(alive, reward, 0.0)
    length = length + alive.astype(jnp.int32)
    recs = recs.at[:, t].set(jnp.where(alive, action, -1))
    # step_env does not reset: done only freezes the session (alive), no fresh episode
    new_history = next_input(history, obs.history, reward, jnp.zeros_like(done))
    return (state, new_history, alive & ~done, ret, length, recs, causes), None

  init = (state, first(obs.history), jnp.ones(n, bool), jnp.zeros(n), jnp.zeros(n, jnp.int32),
          jnp.full((n, steps), -1, jnp.int32), jnp.zeros((n, 4), bool))
  xs = (jnp.arange(steps), jax.random.split(key, steps))
  (_, _, _, ret, length, recs, causes), _ = jax.lax.scan(body, init, xs)
  lengthf = length.astype(jnp.float32)
  distinct_all = _distinct(recs.reshape(1, -1))[0].astype(jnp.float32)
  share = causes.mean(axis=0)
  out = {"R": ret.mean(), "Len": lengthf.mean(),
         "Ravg": (ret / jnp.maximum(lengthf, 1.0)).mean(), "R_std": ret.std(),
         "ctr": ret.sum() / jnp.maximum(lengthf.sum(), 1.0),
         "quit_low_reward": share[0], "quit_similar": share[1], "quit_max_len": share[2],
         "quit_forced": share[3],
         "distinct": _distinct(recs).astype(jnp.float32).mean(),
         "CV": distinct_all / num_items,
         "CV_turn": distinct_all / jnp.maximum(lengthf.sum(), 1.0),
         "Diversity": _diversity(recs, env.item_vectors(env_params)).mean()}
  if popularity is not None:
    nov = jnp.where(recs >= 0, -jnp.log(popularity[jnp.maximum(recs, 0)]), 0.0)
    out["Novelty"] = (nov.sum(axis=1) / jnp.maximum(lengthf, 1.0)).mean()
  return out


def agent_policy(agent, params, strategy: str, epsilon: float = 0.0) -> Policy:
  """An agent's act as an evaluation policy (it sees the history only, never the env state)."""
  def policy(key, history, state, allowed):
    del state
    return agent.act(params, history, key, strategy, epsilon, allowed=allowed)
  return policy
