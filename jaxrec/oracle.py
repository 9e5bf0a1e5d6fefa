"""The oracle labeler: a SIMULATED judge built on an env's user model. It is not an LLM.

It stands in for the LLM of the paper's preference distillation (Sec. 4.1.1, Eq. 2-3) in
CPU-only runs and tests, and measures how labeler quality moves the results (temperature,
None threshold, flip noise). Logs and docs must call it "oracle", never an LLM.

Given a history, a user and k candidates, the judge computes the rewards the user model would
give each candidate and labels like a noisy, softmax-rational user:

  r_j      = candidate_rewards(...)[j]                      j = 0..k-1
  p_base   = softmax(r / temperature) over the k candidates  (temperature 0: one-hot argmax)
           = one-hot on "None" (label k) if max_j r_j < none_threshold
  (quit_aware: candidates that the env's similarity rule would end the session on, i.e.
  within distance beta of one of the history's last W items, are never chosen and count as
  under the threshold: a judge that knows the user leaves on near-repeats)
  p        = (1 - flip_prob) * p_base + flip_prob / (k + 1)  (a uniform flip over k+1 labels)
  choice   ~ p,   logprobs = log p   (normalised: logsumexp = 0)

`none_threshold` defaults to the env's quit `min_reward`: "None" means "every candidate would
make this user leave". Everything is pure and jittable for one row; callers vmap.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxrec.envs.base import RecEnv, too_similar
from jaxrec.envs.matrix import MatrixEnv
from jaxrec.envs.sequential import SequentialEnv
from jaxrec.errors import ConfigError
from jaxrec.oracle_config import OracleConfig
from jaxrec.usermodels.sequential import SeqScorer


def check_env(env: RecEnv) -> None:
  if not isinstance(env, (SequentialEnv, MatrixEnv)):
    raise ConfigError(f"the oracle knows SequentialEnv and MatrixEnv, not {type(env).__name__}")


def candidate_rewards(env: RecEnv, env_params, history: jax.Array, user: jax.Array,
                      candidates: jax.Array) -> jax.Array:
  """The rewards the env's user model gives each candidate, from the history alone.

  Args:
    env: a SequentialEnv (the SASRec scorer re-encodes the history window) or a MatrixEnv
      (the reward table row of `user`).
    env_params: its params.
    history: [L] int32 consumed items, right-aligned, -1 = padding (an env observation).
    user: int32 the env's user index (-1 where the env does not model users).
    candidates: [k] int32 item ids.
  Returns:
    [k] float32 rewards.

  Sequential env: equal to what `env.step` would pay while the episode's whole history fits in
  the window; after that the env's streaming state still remembers, through the stacked
  attention layers, items older than the window that a history of L items no longer shows
  (a judge that reads the history, as an LLM prompt does, cannot know them).
  """
  check_env(env)
  if isinstance(env, MatrixEnv):
    return env_params.table[user, candidates].astype(jnp.float32)
  states = env.model.apply(env_params.model, history, method=SeqScorer.encode)
  h = states[-1]
  return env.reward_of_score(env_params, env.score(env_params, h, candidates)).astype(
      jnp.float32)


def would_quit(env: RecEnv, env_params, history: jax.Array, candidates: jax.Array) -> jax.Array:
  """[k] bool: the candidate lies within the quit distance beta of one of the history's last
  W (env.quit_window) items, so recommending it would end the session (BiLLP's rule)."""
  recent = history[-env.quit_window:]
  beta = env.quit_params(env_params).beta
  return jax.vmap(lambda c: too_similar(env.item_vectors(env_params), c, recent, beta))(
      candidates)


def label_logprobs(rewards: jax.Array, threshold: jax.Array, cfg: OracleConfig,
                   allowed: jax.Array | None = None) -> jax.Array:
  """rewards [k] (and allowed [k] bool) -> log-probabilities [k + 1] of the labels 0..k-1 and
  None (= k)."""
  k = rewards.shape[-1]
  if allowed is not None:
    rewards = jnp.where(allowed, rewards, -jnp.inf)
  if cfg.temperature > 0:
    p_items = jax.nn.softmax(rewards / cfg.temperature)
  else:
    p_items = jax.nn.one_hot(jnp.argmax(rewards), k, dtype=jnp.float32)
  none = jnp.max(rewards) < threshold
  p = jnp.where(none, jax.nn.one_hot(k, k + 1, dtype=jnp.float32),
                jnp.concatenate([p_items, jnp.zeros((1,), jnp.float32)]))
  p = (1.0 - cfg.flip_prob) * p + cfg.flip_prob / (k + 1)
  return jnp.log(p)


def judge(key: jax.Array, env: RecEnv, env_params, history: jax.Array, user: jax.Array,
          candidates: jax.Array, cfg: OracleConfig = OracleConfig()
          ) -> tuple[jax.Array, jax.Array]:
  """One row: -> (choice int32 in 0..k, k = "None"; logprobs [k + 1] float32 of the labels).

  The choice is a sample of exp(logprobs), so logprobs describe exactly how it was drawn.
  """
  rewards = candidate_rewards(env, env_params, history, user, candidates)
  threshold = (env.quit_params(env_params).min_reward if cfg.none_threshold is None
               else jnp.float32(cfg.none_threshold))
  allowed = ~would_quit(env, env_params, history, candidates) if cfg.quit_aware else None
  logprobs = label_logprobs(rewards, threshold, cfg, allowed)
  choice = jax.random.categorical(key, logprobs).astype(jnp.int32)
  return choice, logprobs


def judge_batch(key: jax.Array, env: RecEnv, env_params, history: jax.Array, user: jax.Array,
                candidates: jax.Array, cfg: OracleConfig = OracleConfig()
                ) -> tuple[jax.Array, jax.Array]:
  """`judge` vmapped over rows: history [N, L], user [N], candidates [N, k] ->
  (choice [N] int32, logprobs [N, k + 1])."""
  keys = jax.random.split(key, history.shape[0])
  one = lambda k, p, h, u, c: judge(k, env, p, h, u, c, cfg)
  return jax.vmap(one, in_axes=(0, None, 0, 0, 0))(keys, env_params, history, user, candidates)
