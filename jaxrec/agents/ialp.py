"""iALP's preference step (paper Sec. 4.1, Eq. 2-3): labels of k candidates -> (a_t, r^p_t).

The actor proposes k candidates (`acting.propose`); a labeler (an LLM through
`llm_labeler`, or the simulated `jaxrec.oracle`) answers with a choice in 0..k (k = "None"):

  chosen j < k   ->  a_t = candidates[j],            r^p_t = 1
  None (or an unparseable answer, valid = False)
                 ->  a_t = a uniform candidate,       r^p_t = 0

Soft labels (an option beside the paper's hard ones) keep a_t as above and set r^p_t to the
labeler's probability that the user takes one of the candidates, 1 - p(None) = E[r^p] under
the label distribution: the same expectation with less noise than one sampled answer.
Algorithm 1 itself is `Pretrainer` below: the actor proposes, a labeler answers, the answer
becomes a transition of D_LLM, and A2C (Eq. 6-10) learns from D_LLM. Its run directory, the
labelers' plumbing and the CLI are `jaxrec.train.pretraining` / `python -m jaxrec.pretrain`;
LLMOnline (`jaxrec.agents.llm_online`) uses the preference step inside the online loop.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from jaxrec import oracle
from jaxrec.agents import acting, optim
from jaxrec.agents.a2c import A2C
from jaxrec.agents.types import AgentState, Transition, strong_types
from jaxrec.envs.base import append
from jaxrec.errors import ConfigError

LABELS = ("hard", "soft")
CANDIDATES = {"topk": "greedy", "sample": "categorical"}  # proposal -> acting strategy


@dataclasses.dataclass(frozen=True)
class IALPConfig:
  """What Alg. 1 needs (PretrainConfig.ialp() of jaxrec.train.pretraining builds it)."""
  num_candidates: int = 10  # k (the paper's prompt shows 10)
  candidates: str = "topk"  # topk | sample (without replacement from the actor's softmax)
  epsilon: float = 0.1
  labels: str = "hard"  # hard (paper Eq. 3) | soft (r^p = 1 - p(None), needs logprobs)
  num_sessions: int = 256
  episode_len: int = 10  # T of Alg. 1
  episodes_per_epoch: int = 4
  updates_per_step: int = 1
  batch_size: int = 256
  oracle: oracle.OracleConfig = oracle.OracleConfig()  # the inproc labeler


def preference_actions(key: jax.Array, candidates: jax.Array, choice: jax.Array,
                       valid: jax.Array | None = None, logprobs: jax.Array | None = None,
                       labels: str = "hard") -> tuple[jax.Array, jax.Array, jax.Array]:
  """Resolves labels into actions and preference rewards.

  Args:
    key: for the uniform candidate of "None" rows.
    candidates: [N, k] int32 item ids.
    choice: [N] int32 in 0..k (k = "None").
    valid: [N] bool or None (all valid); invalid rows count as "None".
    logprobs: [N, k + 1] label log-probabilities (needed for labels="soft").
    labels: "hard" (Eq. 3) or "soft" (1 - p(None)).
  Returns:
    (action [N] int32, reward [N] float32, none [N] bool).
  """
  n, k = candidates.shape
  none = choice >= k
  if valid is not None:
    none = none | ~valid
  uniform = jax.random.randint(key, (n,), 0, k)
  slot = jnp.where(none, uniform, jnp.minimum(choice, k - 1))
  action = jnp.take_along_axis(candidates, slot[:, None], axis=1)[:, 0].astype(jnp.int32)
  if labels == "hard":
    reward = (~none).astype(jnp.float32)
  elif labels == "soft":
    if logprobs is None:
      raise ValueError("soft labels need logprobs")
    reward = 1.0 - jnp.exp(logprobs[:, k].astype(jnp.float32))
    if valid is not None:
      reward = jnp.where(valid, reward, 0.0)
  else:
    raise ValueError(f"labels must be one of {LABELS}, got {labels!r}")
  return action, reward, none


def extend(history: jax.Array, action: jax.Array) -> jax.Array:
  """history [N, L], action [N] -> the next histories [N, L] (a_t becomes x_{t+1})."""
  return jax.vmap(append)(history, action)


class PretrainState(NamedTuple):
  agent: AgentState  # A2C's params and optimizer
  buffer: Any  # D_LLM: flashbax item buffer of Transitions


class StepStats(NamedTuple):
  none_rate: jax.Array
  invalid_rate: jax.Array
  mean_rp: jax.Array
  actor_loss: jax.Array
  critic_loss: jax.Array


class Pretrainer:
  """The jittable pieces of Alg. 1 for one env, agent and config (shared by the three
  labelers of jaxrec.train.pretraining)."""

  def __init__(self, cfg: IALPConfig, agent: A2C, env, buffer_items: int,
               shard: Callable = lambda t: t):
    """agent: the A2C (Q critic) that learns from D_LLM; buffer_items: D_LLM's capacity;
    shard: a sharding constraint on session-major arrays (default none)."""
    num_items = env.num_actions
    if env.num_tokens != num_items:
      raise ConfigError("this env puts user tokens in the history (--user_token); LLM "
                        "preference labels are written for item histories only")
    if not 0 < cfg.num_candidates <= num_items:
      raise ConfigError(f"--num_candidates must be in 1..{num_items}, got {cfg.num_candidates}")
    self.cfg = cfg
    self.env = env
    self.shard = shard
    self.agent = agent
    self.strategy = CANDIDATES[cfg.candidates]
    self.buffer = optim.item_buffer(buffer_items, cfg.batch_size)

  def init(self, key: jax.Array) -> PretrainState:
    return PretrainState(agent=self.agent.init(key), buffer=strong_types(
        self.buffer.init(optim.example_transition(jnp.full((self.env.history_len,), -1, jnp.int32)))))

  def start(self, key: jax.Array, env_params) -> tuple[jax.Array, jax.Array]:
    """-> (history [N, L], user [N]) of N fresh sessions of the train env."""
    obs, _ = jax.vmap(self.env.reset_env, in_axes=(0, None))(
        jax.random.split(key, self.cfg.num_sessions), env_params)
    return self.shard((obs.history, obs.user))

  def propose(self, state: PretrainState, history: jax.Array, key: jax.Array) -> jax.Array:
    """history [N, L] -> candidates [N, k] (Alg. 1 lines 7-9)."""
    logits = self.agent.logits(state.agent.params, history)
    return acting.propose(key, logits, self.cfg.num_candidates, self.strategy,
                          self.cfg.epsilon)

  def train(self, state: PretrainState, key: jax.Array, num_updates: int):
    """num_updates A2C steps on uniform minibatches of D_LLM (Alg. 1 lines 13-15)."""

    def one(agent_state, k):
      sample = self.shard(self.buffer.sample(state.buffer, k).experience)
      return self.agent.update(agent_state, sample, k)

    agent_state, metrics = jax.lax.scan(one, state.agent, jax.random.split(key, num_updates))
    return state._replace(agent=agent_state), jax.tree_util.tree_map(jnp.mean, metrics)

  def learn(self, state: PretrainState, history, candidates, choice, valid, logprobs, last,
            key: jax.Array):
    """Labels of one lockstep step -> stored transitions and updates; returns the state, the
    next histories [N, L] and the step's StepStats."""
    k_none, k_train = jax.random.split(key)
    action, reward, none = preference_actions(k_none, candidates, choice, valid, logprobs,
                                              self.cfg.labels)
    next_history = extend(history, action)
    done = jnp.full(action.shape, last, bool)  # the episode's last step: no bootstrap
    batch = Transition(history, action, reward, done, next_history)
    state = state._replace(buffer=strong_types(self.buffer.add(state.buffer, batch)))
    state, metrics = self.train(state, k_train, self.cfg.updates_per_step)
    stats = StepStats(none_rate=none.mean(), invalid_rate=(~valid).mean(),
                      mean_rp=reward.mean(), actor_loss=metrics["actor_loss"],
                      critic_loss=metrics["critic_loss"])
    return state, next_history, stats

  def inproc_epoch(self, state: PretrainState, env_params, key: jax.Array):
    """One epoch with the oracle in the loop: a scan over episodes of a scan over steps."""
    cfg = self.cfg
    ocfg = cfg.oracle

    def step(carry, xs):
      state, history, user = carry
      k, t = xs
      k_propose, k_judge, k_learn = jax.random.split(k, 3)
      cands = self.propose(state, history, k_propose)
      choice, logprobs = oracle.judge_batch(k_judge, self.env, env_params, history, user, cands,
                                            ocfg)
      valid = jnp.ones(choice.shape, bool)
      state, history, stats = self.learn(state, history, cands, choice, valid, logprobs,
                                         t == cfg.episode_len - 1, k_learn)
      return (state, history, user), stats

    def episode(state, k):
      k_start, k_steps = jax.random.split(k)
      history, user = self.start(k_start, env_params)
      xs = (jax.random.split(k_steps, cfg.episode_len), jnp.arange(cfg.episode_len))
      (state, _, _), stats = jax.lax.scan(step, (state, history, user), xs)
      return state, stats

    state, stats = jax.lax.scan(episode, state, jax.random.split(key, cfg.episodes_per_epoch))
    return state, jax.tree_util.tree_map(jnp.mean, stats)


def episode_keys(key: jax.Array, cfg: IALPConfig):
  """The per-episode (start key, per-step keys [T]) of an epoch, as inproc_epoch splits them."""
  for k in jax.random.split(key, cfg.episodes_per_epoch):
    k_start, k_steps = jax.random.split(k)
    yield k_start, jax.random.split(k_steps, cfg.episode_len)
