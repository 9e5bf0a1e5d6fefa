"""The logged-data buffer of the batch-RL learners: every logged interaction of a peer-protocol
env directory's dataset as a transition, laid out as the env's own observations.

As EasyRL4Rec builds it (`examples/policy/policy_utils.py: construct_buffer_from_offline_data`,
the version whose `prepare_dir_log` writes the published Coat logs' headers): each user's
logged items, in the data's order (oldest first here), are stepped through the *true* env with
that user as the current user; the env's leave rule (item too close to one of the last W
recommended, or max_turn) marks the step `terminated`, the env starts afresh from the next
item, and the user's last item is terminated too (`terminateds[-1] = True`). The reward is the
logged rating (`args.yfeat`), never the env's. So a user's sequence becomes one or more
episodes, each starting from the env's initial observation, and the state tracker reads only
the items of the episode (its window stops at the episode start).

Here the same walk runs the true env's own `step_env` (jaxrec.envs.matrix.MatrixEnv, the peer's
leave rule and max_turn: jaxrec.envs.peer) over every user at once (vmap over users, one
`lax.scan` over positions), so the histories, user tokens and episode ends are exactly what the
env would show a policy recommending the logged items. `leave_split=False` keeps one episode
per user (the leave rule not applied to the logged data).

What the two peer versions do differently, and what is kept: the later
`policy_offline_utils.py` min-max scales the logged rewards before they enter the buffer and
keeps the env's max_turn (30) while walking; the version above keeps raw ratings and sets
max_turn to the largest bin (no truncation). Raw ratings and the env's max_turn are kept here.

Fields (N transitions, L the env's history length):
  items, rewards         [N, L] the observation: the env's observed history and, for a reward
                         input, its items' normalised logged rewards (the peer's
                         train_min / train_max = the buffer's min / max rating; a fresh
                         episode holds the normalised initial reward 1, envs.base)
  action                 [N] int32 the logged item
  reward                 [N] float32 the logged rating
  done                   [N] bool the episode ends with this step (terminated: no bootstrap)
  next_items, next_rewards  [N, L] the observation after the step
  nstep_return           [N] sum_{k<n'} gamma^k reward[t + k], n' = n or the steps to the
                         episode's end (tianshou compute_nstep_return)
  boot                   [N] int32 the transition whose next observation the n-step target
                         bootstraps from (t + n - 1; unused where boot_discount is 0)
  boot_discount          [N] float32 gamma^n, or 0 where the episode ends within n steps
  env_reward             [N] float32 what the env itself pays for the logged item (the true
                         rating): never trained on; the logged behaviour's return in the true
                         env (`summary`), the reference the learners' returns are read against
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrec.data.dataset import Dataset
from jaxrec.envs.base import append, normalise_rewards, reward_history
from jaxrec.envs.matrix import MatrixEnv
from jaxrec.errors import DataError


class Logged(NamedTuple):
  """N logged transitions (module docstring); leading axis N on every field."""
  items: jax.Array
  rewards: jax.Array
  action: jax.Array
  reward: jax.Array
  done: jax.Array
  next_items: jax.Array
  next_rewards: jax.Array
  nstep_return: jax.Array
  boot: jax.Array
  boot_discount: jax.Array
  env_reward: jax.Array

  @property
  def size(self) -> int:
    return int(self.action.shape[0])


def _padded(ds: Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """-> (items [U, T] int32, ratings [U, T] float32, lengths [U]), T the longest sequence;
  positions past a user's length hold item 0 and rating 0 (never emitted)."""
  lengths = np.diff(ds.offsets).astype(np.int64)
  t = int(lengths.max())
  pos = np.arange(t)[None, :]
  valid = pos < lengths[:, None]
  src = np.where(valid, ds.offsets[:-1, None] + pos, 0)
  items = np.where(valid, ds.seq_items[src], 0).astype(np.int32)
  ratings = np.where(valid, ds.ratings[src], 0.0).astype(np.float32)
  return items, ratings, lengths


def walk(env: MatrixEnv, params, items: jax.Array, ratings: jax.Array, lengths: jax.Array,
         bounds: tuple[float, float], leave_split: bool = True) -> dict:
  """Steps every user's logged items through `env` (the module docstring's walk).

  items, ratings [U, T]; lengths [U]; bounds: (min, max) the reward input is normalised by.
  -> {field: [U, T, ...]} of items, rewards, action, reward, done, next_items, next_rewards,
  env_reward (positions t >= lengths[u] are padding). Jittable; user u is the env's user u."""
  fresh_rewards, _ = reward_history(env.history_len, bounds)

  def start(user):
    # MatrixEnv._initial for a given user: its token first where the env has user tokens.
    first = env.num_actions + user if env.num_users else jnp.int32(-1)
    # The env has no reset-to-a-given-user API; _fresh is the state its reset builds.
    return env._fresh(user, jnp.asarray(first, jnp.int32), ())

  def one_user(user, seq, rats, length):
    def body(carry, xs):
      state, rew_hist, restart = carry
      t, a, r = xs
      state = jax.tree_util.tree_map(lambda f, s: jnp.where(restart, f, s), start(user), state)
      rew_hist = jnp.where(restart, fresh_rewards, rew_hist)
      _, nxt, env_reward, env_done, _ = env.step_env(jax.random.PRNGKey(0), state, a, params)
      last = t == length - 1
      done = (env_done if leave_split else False) | last
      next_rew = append(rew_hist, normalise_rewards(r, bounds))
      out = {"items": state.history, "rewards": rew_hist, "action": a, "reward": r,
             "done": done, "next_items": nxt.history, "next_rewards": next_rew,
             "env_reward": env_reward}
      return (nxt, next_rew, done), out

    init = (start(user), fresh_rewards, jnp.bool_(False))
    _, out = jax.lax.scan(body, init, (jnp.arange(seq.shape[0]), seq, rats))
    return out

  users = jnp.arange(items.shape[0], dtype=jnp.int32)
  return jax.vmap(one_user)(users, items, ratings, lengths)


def nstep(reward: np.ndarray, done: np.ndarray, gamma: float, n: int
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """tianshou's n-step target pieces over transitions in episode order (every episode ends with
  a done transition): -> (nstep_return [N] float32, boot [N] int32, boot_discount [N] float32).

  G_t = sum_{k<n'} gamma^k r_{t+k}, n' = n or (steps to the episode's end, done included);
  the target bootstraps from the next observation of t + n - 1 with gamma^n where no step of
  t .. t + n - 1 is done, else not at all (every episode end is terminal in the peer's buffer)."""
  size = len(reward)
  ret = np.zeros(size, np.float64)
  alive = np.ones(size, bool)  # no done among t .. t + k - 1
  idx = np.arange(size)
  for k in range(n):
    j = np.minimum(idx + k, size - 1)
    ret += np.where(alive, gamma ** k * reward[j], 0.0)
    alive &= ~done[j]
  boot = np.minimum(idx + n - 1, size - 1).astype(np.int32)
  disc = np.where(alive, gamma ** n, 0.0)
  return ret.astype(np.float32), boot, disc.astype(np.float32)


def build_logged(ds: Dataset, env: MatrixEnv, params, gamma: float, n_step: int,
                 leave_split: bool = True, to_device: bool = True) -> Logged:
  """The buffer of the module docstring from the dataset `ds` an env directory holds and that
  directory's true (test) env. Users with no interaction are skipped."""
  if not isinstance(env, MatrixEnv):
    raise DataError("batch RL reads matrix envs (experiments.build_envs --protocol=peer); got "
                    f"a {type(env).__name__}")
  if ds.num_interactions == 0:
    raise DataError(f"dataset {ds.name!r}: no logged interactions, so no buffer")
  if ds.ratings.shape[0] != ds.num_interactions:
    raise DataError(f"dataset {ds.name!r}: no ratings; the peer's buffer takes each logged "
                    "interaction's rating as its reward")
  rows = int(params.table.shape[0])
  if rows != ds.num_users:  # a logged user past the matrix would read another's row under jit
    raise DataError(f"dataset {ds.name!r} has {ds.num_users} users, the true env's matrix "
                    f"{rows}")
  items, ratings, lengths = _padded(ds)
  bounds = (float(ds.ratings.min()), float(ds.ratings.max()))
  out = jax.jit(walk, static_argnums=(0, 6))(env, params, items, ratings, lengths, bounds,
                                            leave_split)
  keep = np.arange(items.shape[1])[None, :] < lengths[:, None]  # [U, T], row-major = user order
  flat = {k: np.asarray(v)[keep] for k, v in out.items()}
  ret, boot, disc = nstep(flat["reward"], flat["done"], gamma, n_step)
  logged = Logged(items=flat["items"].astype(np.int32), rewards=flat["rewards"],
                  action=flat["action"].astype(np.int32), reward=flat["reward"],
                  done=flat["done"], next_items=flat["next_items"].astype(np.int32),
                  next_rewards=flat["next_rewards"], nstep_return=ret, boot=boot,
                  boot_discount=disc, env_reward=flat["env_reward"])
  return Logged(*map(jnp.asarray, logged)) if to_device else logged


def summary(logged: Logged) -> dict:
  """What the run logs of its buffer: transitions, episodes, mean episode length and logged
  reward, and the logged behaviour's episodes replayed in the env (its R, Len, Ravg: each
  episode's sum of env_reward, its length, their ratio, averaged over episodes)."""
  done = np.asarray(logged.done)
  episode = np.concatenate([[0], np.cumsum(done)[:-1]])  # every buffer ends with a done
  ret = np.bincount(episode, weights=np.asarray(logged.env_reward, np.float64))
  length = np.bincount(episode)
  return {"transitions": logged.size, "episodes": int(done.sum()),
          "episode_len": float(logged.size / max(int(done.sum()), 1)),
          "mean_reward": float(np.asarray(logged.reward).mean()),
          "behaviour": {"R": float(ret.mean()), "Len": float(length.mean()),
                        "Ravg": float((ret / length).mean())}}
