"""The `oracle` backend: jaxrec.oracle's SIMULATED judge over request shards. Not an LLM.

It reads no prompt: it labels each row from the train env's user model (softmax over the
candidates' rewards at a temperature, "None" under a threshold, optional flip noise), for
CPU-only runs and for measuring how labeler quality moves results. Rows run in jitted, vmapped
chunks of fixed size (the last one padded) so every shard reuses one compiled program; each
row's key is fold_in(shard key, row), so labels do not depend on the chunk size or on which
worker labels the shard.
"""

from __future__ import annotations

import dataclasses
import zlib

import jax
import jax.numpy as jnp
import numpy as np

from jaxrec import oracle
from jaxrec.envs.build import load_env
from jaxrec.envs.matrix import MatrixEnv
from jaxrec.errors import DataError
from jaxrec.shards import LabelShard, RequestShard


class OracleBackend:
  name = "oracle"

  def __init__(self, env_dir: str, cfg: oracle.OracleConfig, seed: int = 0,
               chunk: int = 2048):
    cfg.validate()
    self.env, self.params, env_meta = load_env(env_dir, "train")
    oracle.check_env(self.env)
    self.cfg, self.seed, self.chunk = cfg, seed, chunk
    self.fingerprint = env_meta.fingerprint
    self.model = (f"oracle (simulated judge, not an LLM) on {env_dir} train env, "
                  f"temperature={cfg.temperature}, none_threshold={cfg.none_threshold}, "
                  f"flip_prob={cfg.flip_prob}")
    self.meta = {"oracle": dataclasses.asdict(cfg), "env": env_dir, "seed": seed,
                 "dataset": env_meta.dataset, "fingerprint": self.fingerprint}
    self.prompt_tokens = 0
    env, c = self.env, cfg

    def one(key, row, params, h, u, cand):
      return oracle.judge(jax.random.fold_in(key, row), env, params, h, u, cand, c)

    self._run = jax.jit(jax.vmap(one, in_axes=(None, 0, None, 0, 0, 0)))

  def _check(self, req: RequestShard, shard: str) -> None:
    if req.history.shape[1] != self.env.history_len:
      raise DataError(f"request shard {shard!r}: history length {req.history.shape[1]}, the "
                      f"env's is {self.env.history_len}")
    n_items = self.env.num_actions
    if len(req.session) and int(req.candidates.max()) >= n_items:
      raise DataError(f"request shard {shard!r}: candidate ids past the env's {n_items} items")
    if isinstance(self.env, MatrixEnv):
      n_users = self.params.table.shape[0]
      bad = (req.user < 0) | (req.user >= n_users)
      if bad.any():
        raise DataError(f"request shard {shard!r}: row {int(np.argmax(bad))} has user "
                        f"{int(req.user[np.argmax(bad)])}, the matrix env has {n_users} users")

  def label(self, requests: RequestShard, shard: str = "") -> LabelShard:
    self._check(requests, shard)
    n = len(requests.session)
    key = jax.random.fold_in(jax.random.PRNGKey(self.seed), zlib.crc32(shard.encode()) >> 1)
    choice = np.empty(n, np.int32)
    k = requests.candidates.shape[1]
    logprobs = np.empty((n, k + 1), np.float32)
    # Chunk sizes are powers of two up to self.chunk: few compiled shapes, little padding.
    size = min(self.chunk, max(64, 1 << max(n - 1, 1).bit_length()))
    for start in range(0, n, size):
      rows = np.arange(start, start + size)
      take = np.minimum(rows, n - 1)  # pad the last chunk with copies of the last row
      c, lp = self._run(key, jnp.asarray(rows, jnp.int32), self.params,
                        jnp.asarray(requests.history[take]), jnp.asarray(requests.user[take]),
                        jnp.asarray(requests.candidates[take]))
      m = min(size, n - start)
      choice[start:start + m] = np.asarray(c)[:m]
      logprobs[start:start + m] = np.asarray(lp)[:m]
    return LabelShard(choice, np.ones(n, bool), logprobs)
