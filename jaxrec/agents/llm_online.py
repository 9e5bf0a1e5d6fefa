"""LLMOnline (paper Sec. 6.3, RQ3): the labeler as an online sub-agent.

At every step the actor proposes k candidates (`acting.propose` with the run's exploration
strategy), the labeler picks one (None -> a uniform candidate, as in pre-training), that item
is recommended, and the env reward (not r^p) updates the actor-critic with A2C (Eq. 6-10).

Here the labeler is the in-process oracle (`jaxrec.oracle`, a SIMULATED judge, not an LLM)
built on the TRAIN env's user model: it is the agent's fixed outside knowledge, so it travels
in the params (`{"actor": ..., "oracle": train env params}`) and judges the same way when the
policy is evaluated in the test env. The oracle reads only the history, which fits the
sequential envs of the paper's RQ3 (LFM, Industry); a matrix env's user index means a different
person in the test env, so it is refused.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxrec import oracle
from jaxrec.agents import acting, ialp
from jaxrec.agents.a2c import A2C, A2CConfig
from jaxrec.agents.types import AgentState, Transition
from jaxrec.envs.base import RecEnv
from jaxrec.envs.sequential import SequentialEnv
from jaxrec.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class LLMOnlineConfig(A2CConfig):
  num_candidates: int = 10
  oracle: oracle.OracleConfig = oracle.OracleConfig()


class LLMOnline(A2C):

  def __init__(self, cfg: LLMOnlineConfig, env: RecEnv, env_params):
    if not isinstance(env, SequentialEnv):
      raise ConfigError("--agent=llm_online needs a sequential env (its oracle judges from the "
                        f"history); got a {type(env).__name__}")
    if not 0 < cfg.num_candidates <= cfg.net.num_items:
      raise ConfigError(f"--num_candidates must be in 1..{cfg.net.num_items}, got "
                        f"{cfg.num_candidates}")
    cfg.oracle.validate()
    super().__init__(cfg)
    self.env = env
    self.oracle_params = env_params  # the train env's: the labeler's knowledge

  def init(self, key: jax.Array, params=None) -> AgentState:
    """params: the actor-critic's initial params (default random)."""
    actor = self.init_params(key) if params is None else params
    return AgentState(params={"actor": actor, "oracle": self.oracle_params},
                      opt_state=self.optimizer.init(actor), step=jnp.int32(0))

  def act(self, params, history, key, strategy, epsilon=0.0, allowed=None):
    k_propose, k_judge, k_none = jax.random.split(key, 3)
    logits = self.logits(params["actor"], history)
    cands = acting.propose(k_propose, logits, self.cfg.num_candidates, strategy, epsilon,
                           allowed)
    user = jnp.full(history.shape[:1], -1, jnp.int32)
    choice, _ = oracle.judge_batch(k_judge, self.env, params["oracle"], history, user, cands,
                                   self.cfg.oracle)
    action, _, _ = ialp.preference_actions(k_none, cands, choice)
    return action

  def update(self, state: AgentState, batch: Transition, key: jax.Array):
    actor, opt_state, loss, metrics = self.fit(state.params["actor"], state.opt_state, batch,
                                               key)
    return state._replace(params=state.params | {"actor": actor}, opt_state=opt_state,
                          step=state.step + 1), metrics | {"loss": loss}
