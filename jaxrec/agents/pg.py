"""PG: REINFORCE (Williams 1992) with reward-to-go over each unroll.

  G_t  = r_t + gamma * (1 - done_t) * G_{t+1},   G_T = 0        (reverse scan over the unroll)
  A_t  = (G_t - mean G) / (std G + eps)  over the unroll's T * N steps (normalize_returns)
  L    = -mean_t log pi(a_t | s_t) * A_t  - entropy_coef * entropy (0.01 by default)

Bias at the unroll's end: the loop auto-resets sessions, so unrolls are not aligned with
episodes, and an episode still running at step T is cut there with G_T = 0 (REINFORCE has no
critic to bootstrap from). Step t's return misses gamma^(T - t) * G_T of its true value, which
matters only within the last ~1 / (1 - gamma) = 10 steps of an unroll. unroll_len defaults to
32, above the envs' usual max_len of 30, so the episode each session is in when the unroll
starts always ends inside it (its returns are exact) and only episodes begun late in the unroll
are cut; a shorter unroll would cut every long episode. `complete_frac` reports the share of
steps whose episode ended inside the unroll. The critic-based A2C has no such cut.

Baseline: per-unroll return normalization (not a learned or running baseline): subtracting the
batch mean cuts variance at no cost in state or parameters, and scaling by the std keeps the
step size independent of the reward scale of each environment.

The policy is a `PolicyNetwork`: ActorCritic's encoder and actor head under the same names,
without the critic, so its params are ActorCritic's minus "critic".
"""

from __future__ import annotations

import dataclasses

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxrec.agents import optim
from jaxrec.agents.types import AgentState, Transition
from jaxrec.errors import ConfigError
from jaxrec.nets.networks import NetConfig, StateEncoder

_EPS = 1e-8


@dataclasses.dataclass(frozen=True)
class PGConfig:
  net: NetConfig
  learning_rate: float = 1e-3
  gamma: float = 0.9
  unroll_len: int = 32  # >= the envs' max_len (30): see the module docstring
  normalize_returns: bool = True
  max_grad_norm: float = 10.0
  # 0.01, the peer's Coat A2C bonus: without it REINFORCE settles on the greedy items and
  # leaves (docs/protocol.md)
  entropy_coef: float = 0.01


class PolicyNetwork(nn.Module):
  """history [..., L] -> actor logits [..., I]."""
  cfg: NetConfig

  @nn.compact
  def __call__(self, history: jax.Array) -> jax.Array:
    s = StateEncoder(self.cfg, name="encoder")(history)
    return nn.Dense(self.cfg.num_items, name="actor")(s)


def reward_to_go(reward: jax.Array, done: jax.Array, gamma: float) -> jax.Array:
  """Discounted returns within episodes, cut (G_T = 0) at the unroll's end.

  Args:
    reward: [T, ...] float rewards.
    done: [T, ...] bool, True where the episode ended at that step.
    gamma: discount.
  Returns:
    G: [T, ...] float32.
  """
  chex.assert_equal_shape([reward, done])
  discount = gamma * (1.0 - done.astype(jnp.float32))

  def step(g_next, xs):
    r, d = xs
    g = r + d * g_next
    return g, g

  _, returns = jax.lax.scan(step, jnp.zeros(reward.shape[1:], jnp.float32),
                            (reward.astype(jnp.float32), discount), reverse=True)
  return returns


def episode_complete(done: jax.Array) -> jax.Array:
  """[T, ...] bool: True where the step's episode ends within the unroll (its G is exact)."""
  def step(later, d):
    now = d | later
    return now, now

  _, complete = jax.lax.scan(step, jnp.zeros(done.shape[1:], bool), done, reverse=True)
  return complete


def reinforce_loss_single(logits_t: jax.Array, a_t: jax.Array, adv_t: jax.Array) -> jax.Array:
  """-log pi(a_t | s_t) * adv_t for one step; logits_t [I], a_t int, adv_t scalar."""
  chex.assert_rank([logits_t, a_t, adv_t], [1, 0, 0])
  logp_a = jax.nn.log_softmax(logits_t)[a_t]
  return -logp_a * jax.lax.stop_gradient(adv_t)


def pg_loss(net: PolicyNetwork, params, batch: Transition, advantages: jax.Array,
            entropy_coef: float):
  """Mean REINFORCE loss over a rollout; batch [T, N, ...], advantages [T, N]."""
  history = jax.tree_util.tree_map(lambda x: x.reshape((-1, x.shape[-1])), batch.history)
  logits = net.apply(params, history)
  losses = jax.vmap(reinforce_loss_single)(logits, batch.action.reshape(-1),
                                           advantages.reshape(-1))
  logp = jax.nn.log_softmax(logits)
  entropy = -jnp.sum(jnp.exp(logp) * logp, axis=-1).mean()
  loss = losses.mean() - entropy_coef * entropy
  return loss, {"policy_loss": losses.mean(), "entropy": entropy}


class PG(optim.GradientAgent):
  """The agent API (jaxrec.agents.types.Agent) for REINFORCE. It is on-policy: "categorical"
  acting samples the policy it learns; greedy / epsilon acting makes the gradient off-policy
  (biased), kept for the exploration comparison."""

  def __init__(self, cfg: PGConfig):
    if cfg.unroll_len <= 0:
      raise ConfigError(f"PGConfig.unroll_len must be positive, got {cfg.unroll_len}")
    self.cfg = cfg
    self.net = PolicyNetwork(cfg.net)
    self.unroll_len = cfg.unroll_len
    self.optimizer = optim.adam(cfg.learning_rate, cfg.max_grad_norm)

  def logits(self, params, history: jax.Array) -> jax.Array:
    """history [N, L] -> logits [N, I]."""
    return self.net.apply(params, history)


  def advantages(self, batch: Transition) -> tuple[jax.Array, jax.Array]:
    """-> (returns G [T, N], advantages [T, N]) for a rollout."""
    returns = reward_to_go(batch.reward, batch.done, self.cfg.gamma)
    if not self.cfg.normalize_returns:
      return returns, returns
    return returns, (returns - returns.mean()) / (returns.std() + _EPS)

  def update(self, state: AgentState, batch: Transition, key: jax.Array):
    del key  # REINFORCE's update is deterministic given the rollout
    if batch.action.ndim != 2:
      raise ValueError(f"PG.update wants a rollout [T, N]; got action {batch.action.shape}")
    returns, adv = self.advantages(batch)
    params, opt_state, loss, aux = optim.apply_gradients(
        self.optimizer, lambda p: pg_loss(self.net, p, batch, adv, self.cfg.entropy_coef),
        state.params, state.opt_state)
    metrics = {"loss": loss, "return_mean": returns.mean(), "entropy": aux["entropy"],
               "complete_frac": episode_complete(batch.done).mean(dtype=jnp.float32)}
    return state._replace(params=params, opt_state=opt_state, step=state.step + 1), metrics
