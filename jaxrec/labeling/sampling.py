"""Request shards from a fixed proposal policy, for offline labeling jobs and benchmarks:
  random   k distinct items drawn uniformly;
  popular  k distinct items drawn with probability proportional to (interactions + 1).
States come from the train env of --env (sessions rolled out in the env, the proposal's first
candidate being the item recommended, so histories and users are the env's own observations),
or, with --dataset, from the dataset's sequences (the L items before a random position of a
random user; user = the dataset's user index). Writes DIR/catalog.npz once, the shards
`requests-00000`, ... (existing ones are kept), then DIR/DONE.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxrec import shards
from jaxrec.errors import ConfigError

POLICIES = ("random", "popular")


@dataclasses.dataclass(frozen=True)
class SampleConfig:
  num: int = 10000
  k: int = 10
  policy: str = "random"
  shard_size: int = 10000
  history_len: int = 10  # --dataset only; an env fixes its own
  num_sessions: int = 1024  # --env: parallel sessions rolled out
  seed: int = 0

  def validate(self) -> None:
    if not 1 <= self.k <= shards.MAX_K:
      raise ConfigError(f"--k must be in 1..{shards.MAX_K} (one lowercase letter per candidate "
                        f"plus one for None), got {self.k}")
    if self.policy not in POLICIES:
      raise ConfigError(f"--policy must be one of {', '.join(POLICIES)}, got {self.policy!r}")
    for f in ("num", "shard_size", "history_len", "num_sessions"):
      if getattr(self, f) <= 0:
        raise ConfigError(f"--{f} must be positive, got {getattr(self, f)}")


def proposal_logits(popularity: np.ndarray, policy: str) -> np.ndarray:
  """[I] log-weights of the proposal over items."""
  if policy == "random":
    return np.zeros(len(popularity), np.float32)
  return np.log(popularity.astype(np.float32) + 1.0)


def sample_candidates(key: jax.Array, logits: jax.Array, k: int) -> jax.Array:
  """[k] int32 distinct items, a draw without replacement from softmax(logits) (Gumbel top-k)."""
  return jax.lax.top_k(logits + jax.random.gumbel(key, logits.shape), k)[1].astype(jnp.int32)


def from_dataset(ds, cfg: SampleConfig) -> shards.RequestShard:
  """Histories = the history_len items before a random position >= 1 of a random user."""
  lengths = ds.lengths
  if ds.num_items < cfg.k:
    raise ConfigError(f"--k={cfg.k} exceeds the {ds.num_items} items of {ds.name}")
  users_of = ds.user_of_interaction()
  pos = np.arange(ds.num_interactions) - ds.offsets[users_of]
  eligible = np.nonzero(pos >= 1)[0]
  if len(eligible) == 0 or lengths.max() < 2:
    raise ConfigError(f"dataset {ds.name}: no user has 2 interactions to make a history")
  key = jax.random.PRNGKey(cfg.seed)
  k_rows, k_cand = jax.random.split(key)
  j = eligible[np.asarray(jax.random.randint(k_rows, (cfg.num,), 0, len(eligible)))]
  u = users_of[j]
  idx = j[:, None] - cfg.history_len + np.arange(cfg.history_len)[None, :]
  history = np.where(idx >= ds.offsets[u][:, None], ds.seq_items[np.maximum(idx, 0)], -1)
  cands = _candidates(k_cand, proposal_logits(ds.item_popularity(), cfg.policy), cfg.num, cfg.k)
  return shards.RequestShard(session=u.astype(np.int32), step=pos[j].astype(np.int32),
                             history=history.astype(np.int32), candidates=cands,
                             user=u.astype(np.int32))


def _candidates(key, logits: np.ndarray, n: int, k: int) -> np.ndarray:
  chunk = max(1, min(n, 2**24 // len(logits)))
  fn = jax.jit(jax.vmap(lambda kk: sample_candidates(kk, jnp.asarray(logits), k)))
  keys = jax.random.split(key, n)
  out = [np.asarray(fn(keys[s:s + chunk])) for s in range(0, n - chunk + 1, chunk)]
  rest = n % chunk
  if rest:
    out.append(np.asarray(fn(jnp.concatenate([keys[n - rest:], keys[:chunk - rest]])))[:rest])
  return np.concatenate(out).astype(np.int32)


def from_env(env, params, logits: np.ndarray, cfg: SampleConfig) -> shards.RequestShard:
  """Rolls `num_sessions` sessions of the env with the proposal; one request per step."""
  s = min(cfg.num_sessions, cfg.num)
  steps = math.ceil(cfg.num / s)
  logits = jnp.asarray(logits)

  def step(carry, key):
    state, obs, episode = carry
    k_cand, k_env = jax.random.split(key)
    cands = jax.vmap(lambda kk: sample_candidates(kk, logits, cfg.k))(jax.random.split(k_cand, s))
    row = (episode * s + jnp.arange(s, dtype=jnp.int32), obs.step, obs.history, cands, obs.user)
    obs, state, _, done, _ = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
        jax.random.split(k_env, s), state, cands[:, 0], params)
    return (state, obs, episode + done.astype(jnp.int32)), row

  @jax.jit
  def rollout(key):
    k_reset, k_steps = jax.random.split(key)
    obs, state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(k_reset, s), params)
    carry = (state, obs, jnp.zeros(s, jnp.int32))
    return jax.lax.scan(step, carry, jax.random.split(k_steps, steps))[1]

  rows = [np.asarray(a).reshape((steps * s,) + a.shape[2:])[:cfg.num]
          for a in rollout(jax.random.PRNGKey(cfg.seed))]
  return shards.RequestShard(*(r.astype(np.int32) for r in rows))


def sample_requests(cfg: SampleConfig, out: str, env_dir: str = "", dataset=None,
                    log=print) -> dict:
  """Writes the catalog, the request shards and DONE into `out`; returns the shard meta."""
  from jaxrec.envs import build
  cfg.validate()
  if env_dir:
    env, params, env_meta = build.load_env(env_dir, "train")
    ds = build.load_dataset_of(env_dir)
    fp, history_len, num_items = env_meta.fingerprint, env.history_len, env.num_actions
    if env.num_tokens != num_items:
      raise ConfigError(f"{env_dir}: its histories hold user tokens (--user_token); prompts "
                        "are written for item histories only")
    if num_items < cfg.k:
      raise ConfigError(f"--k={cfg.k} exceeds the env's {num_items} items")
    reqs = from_env(env, params, proposal_logits(ds.item_popularity(), cfg.policy), cfg)
  else:
    ds = dataset
    fp, history_len, num_items = build.fingerprint(ds), cfg.history_len, ds.num_items
    reqs = from_dataset(ds, cfg)
  meta = {"dataset": ds.name, "fingerprint": fp, "k": cfg.k, "history_len": history_len,
          "num_items": num_items, "policy": cfg.policy, "seed": cfg.seed,
          "source": f"env {env_dir}" if env_dir else f"dataset {ds.name}"}
  shards.check_meta(out, meta, shards.directory_meta(out))
  shards.write_catalog(out, shards.catalog_of(ds, fp))
  written = 0
  for i, start in enumerate(range(0, cfg.num, cfg.shard_size)):
    part = shards.RequestShard(*(a[start:start + cfg.shard_size] for a in reqs))
    try:
      shards.write_requests(out, f"requests-{i:05d}", part, meta)
      written += 1
    except shards.ShardExistsError:
      pass
  shards.mark_done(out)
  log(f"wrote {written} request shards ({cfg.num} rows, k={cfg.k}, {cfg.policy} proposal) "
      f"to {out}")
  return meta
