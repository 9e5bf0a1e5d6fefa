"""A2C: one SASRec encoder, an actor over all items and a critic, in two forms.

`critic="q"`, the paper's (Eq. 6-10), a Q critic over all items updated after every env step:

  target   y = r + gamma * (1 - done) * max_a' Q(s', a')        (stop-gradient)
  L_Q      = (y - Q(s, a))^2                                     (Eq. 8)
  A(s, a)  = stop_gradient(y - Q(s, a))                          (Eq. 9)
  L_A      = -log pi(a | s) * A(s, a)                            (Eq. 6, 10)
  L        = L_A + L_Q - entropy_coef * H(pi)  (the entropy bonus is not in the paper)

The losses are written for one transition (rlax style) and vmapped by the caller; `mix_logp`
lets A-iALP_ap (Eq. 15) swap in the log-probability of a policy mixture.

`critic="v"` (the default since the simulator-fidelity work) is A2C as tianshou builds it for
EasyRL4Rec's `run_A2C.py` (A2CPolicy): a scalar state value V(s) instead of Q(s, .), and
advantages from lambda-returns over an unroll of 10 steps per session (GAE, Schulman et al.
2016; the peer's --gae-lambda default 1 = Monte-Carlo returns, cut at the unroll's end by V of
the last next state):

  delta_t  = r_t + gamma * (1 - done_t) * V(s_{t+1}) - V(s_t)
  A_t      = delta_t + gamma * lambda * (1 - done_t) * A_{t+1},   A_T = 0
  L_A      = -log pi(a_t | s_t) * A_t        (A_t standardised over the unroll by flag)
  L_V      = 1/2 (A_t + V(s_t) - V(s_t))^2,  the target A_t + V(s_t) held fixed
  L        = L_A + value_coef * L_V - entropy_coef * H(pi)

A Q(s, .) head over ~1,000 items learns only the entries of the actions taken, and the
one-step target reaches 1 step ahead: the quit that ends a session later is invisible to the
actor until the bootstrap chain has carried it back. The value critic's lambda-returns carry
the return of the next 10 steps and V beyond (docs/protocol.md has both on the same envs).
The entropy bonus 0.01 is the peer's Coat A2C script's (--ent-coef 0.01).

Update schedules (`schedule`, value critic):
  step     one gradient step on each rollout of T steps x N sessions (the default).
  collect  tianshou's / PureJaxRL's: the advantages and value targets of the rollout are
           computed once with the parameters that collected it, then `update_epochs` passes,
           each over a fresh permutation of the T * N transitions split into `num_minibatches`
           minibatches, one gradient step per minibatch. EasyRL4Rec's on-policy trainer runs
           `repeat_per_collect` = 1 pass in minibatches of `batch_size` = 1024 (A2CPolicy.learn).
Both run inside the fused scan of `jaxrec.train.loop`.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

import chex
import jax
import jax.numpy as jnp

from jaxrec.agents import acting, optim
from jaxrec.agents.types import AgentState, Transition
from jaxrec.errors import ConfigError
from jaxrec.nets.networks import ActorCritic, ActorValue, NetConfig


@dataclasses.dataclass(frozen=True)
class A2CConfig:
  net: NetConfig
  learning_rate: float = 1e-3
  gamma: float = 0.9
  entropy_coef: float = 0.01  # EasyRL4Rec's Coat A2C (--ent-coef 0.01); 0 = the paper's loss
  max_grad_norm: float = 10.0
  unroll_len: int = 0  # env steps per session per update; 0: 10 (critic v), 1 (q: the paper)
  # The critic's bootstrap: "max" = max_a' Q(s', a') (paper Eq. 8-9); "expected" =
  # sum_a' pi(a'|s') Q(s', a') (the on-policy actor-critic / expected-SARSA target; the max over
  # ~1,000 untrained Q outputs overestimates, and that bias is all the actor sees early on).
  critic_target: str = "max"
  # --critic=q, the actor's weight: "td" = Eq. 9's TD error r + gamma max Q(s', .) - Q(s, a);
  # "baseline" = Q(s, a) - sum_a' pi(a'|s) Q(s, a') (not in the paper: Eq. 9's weight goes to
  # zero wherever the critic fits its targets, so on a fixed buffer, offline label shards,
  # the actor stops learning; docs/labeler.md).
  advantage: str = "td"
  # "q": Q(s, .) over all items (paper Eq. 7-9); "v": a state value and lambda-returns over the
  # unroll (tianshou's A2CPolicy, the peer's); gae_lambda, value_coef and normalize_advantages
  # apply to "v" only.
  critic: str = "v"
  gae_lambda: float = 1.0  # EasyRL4Rec run_A2C.py --gae-lambda
  value_coef: float = 0.5  # EasyRL4Rec run_A2C.py --vf-coef
  normalize_advantages: bool = False  # tianshou A2C does not; PPO implementations do
  schedule: str = "step"  # one of SCHEDULES (module docstring)
  num_minibatches: int = 1  # schedule "collect": minibatches per pass over the rollout
  update_epochs: int = 1  # schedule "collect": passes over the rollout


def a2c_loss_single(logp_a: jax.Array, q_sa: jax.Array, q_next_max: jax.Array,
                    reward: jax.Array, done: jax.Array, gamma: float):
  """Per-transition (actor loss, critic loss, TD error), all scalars."""
  chex.assert_rank([logp_a, q_sa, q_next_max, reward, done], 0)
  target = jax.lax.stop_gradient(reward + gamma * (1.0 - done) * q_next_max)
  td = target - q_sa
  actor = -logp_a * jax.lax.stop_gradient(td)
  return actor, jnp.square(td), td


CRITIC_TARGETS = ("max", "expected")
ADVANTAGES = ("td", "baseline")
SCHEDULES = ("step", "collect")


def _log_softmax(logits: jax.Array, history: jax.Array) -> jax.Array:
  del history
  return jax.nn.log_softmax(logits)
CRITICS = ("q", "v")


def lambda_advantages(reward: jax.Array, done: jax.Array, value: jax.Array,
                      last_value: jax.Array, gamma: float, lam: float) -> jax.Array:
  """GAE over one session's unroll.

  Args:
    reward, done, value: [T] the step's reward, whether the episode ended there, V(s_t).
    last_value: scalar V of the state after the unroll's last step.
    gamma, lam: discount and lambda.
  Returns:
    A: [T] float32 (no gradient flows into the values).
  """
  chex.assert_rank([reward, done, value, last_value], [1, 1, 1, 0])
  value = jax.lax.stop_gradient(value)
  not_done = 1.0 - done.astype(jnp.float32)
  next_value = jnp.concatenate([value[1:], jax.lax.stop_gradient(last_value)[None]])
  delta = reward + gamma * not_done * next_value - value

  def step(a_next, xs):
    d, nd = xs
    a = d + gamma * lam * nd * a_next
    return a, a

  _, adv = jax.lax.scan(step, jnp.zeros((), jnp.float32), (delta, not_done), reverse=True)
  return adv


def value_advantages(net: ActorValue, params, batch: Transition, gamma: float, lam: float):
  """(logits [T, N, I], V(s) [T, N], advantages [T, N], value targets [T, N]) of a rollout
  [T, N]; advantages and targets carry no gradient (module docstring). Where the rollout
  carries the acting forward's values (`batch.value`), only the last next state is encoded
  and logits is None."""
  chex.assert_rank(batch.action, 2)
  if batch.value is None:
    logits, value = net.apply(params, batch.history)  # [T, N, I], [T, N]
  else:
    logits, value = None, batch.value
  _, last_value = net.apply(params, jax.tree_util.tree_map(lambda x: x[-1], batch.next_history))
  adv = jax.vmap(lambda_advantages, in_axes=(1, 1, 1, 0, None, None), out_axes=1)(
      batch.reward, batch.done, value, last_value, gamma, lam)
  return logits, value, adv, adv + jax.lax.stop_gradient(value)


def value_loss_terms(logits: jax.Array, value: jax.Array, history: jax.Array,
                     action: jax.Array, adv: jax.Array, target: jax.Array,
                     entropy_coef: float, value_coef: float, log_policy: Callable | None):
  """The value critic's A2C loss from the network's outputs at `history` [..., L] and fixed
  advantages / targets [...]: (loss, metrics)."""
  logp = (log_policy or _log_softmax)(logits, history)
  logp_a = jnp.take_along_axis(logp, action[..., None], axis=-1)[..., 0]
  actor = -(logp_a * adv).mean()
  critic = 0.5 * jnp.square(target - value).mean()
  entropy = -jnp.sum(jnp.exp(logp) * logp, axis=-1).mean()
  loss = actor + value_coef * critic - entropy_coef * entropy
  return loss, {"actor_loss": actor, "critic_loss": critic, "adv_abs": jnp.abs(adv).mean(),
                "entropy": entropy}


def standardized(adv: jax.Array) -> jax.Array:
  return (adv - adv.mean()) / (adv.std() + 1e-8)


def a2c_value_losses(net: ActorValue, params, batch: Transition, gamma: float, lam: float,
                     entropy_coef: float, value_coef: float, normalize_advantages: bool,
                     log_policy: Callable | None = None):
  """Mean losses over a rollout [T, N] with a state-value critic (module docstring);
  `log_policy(logits, history) -> log pi` as in `a2c_losses`."""
  logits, value, adv, target = value_advantages(net, params, batch, gamma, lam)
  if normalize_advantages:
    adv = standardized(adv)
  return value_loss_terms(logits, value, batch.history, batch.action, adv, target,
                          entropy_coef, value_coef, log_policy)


class Minibatch(NamedTuple):
  """One transition of the collect schedule, its advantage and target fixed at collection."""
  history: jax.Array
  action: jax.Array
  adv: jax.Array
  target: jax.Array


def minibatch_loss(net: ActorValue, params, mb: Minibatch, entropy_coef: float,
                   value_coef: float, log_policy: Callable | None = None):
  logits, value = net.apply(params, mb.history)
  return value_loss_terms(logits, value, mb.history, mb.action, mb.adv, mb.target,
                          entropy_coef, value_coef, log_policy)


def a2c_losses(net: ActorCritic, params, batch: Transition, gamma: float, entropy_coef: float,
               log_policy: Callable | None = None, critic_target: str = "max",
               advantage: str = "td"):
  """Mean losses over a batch [..., ...] of transitions. `log_policy(logits, history) -> log pi`
  maps the actor's logits at those histories to the acting policy's log-probabilities
  (default log_softmax; A-iALP_ap's mixture needs the histories for pi_theta);
  critic_target: "max" (paper Eq. 8) or "expected" (under the acting policy at s');
  advantage: the actor's weight, "td" (paper Eq. 9) or "baseline" (A2CConfig.advantage)."""
  if critic_target not in CRITIC_TARGETS:
    raise ConfigError(f"--critic_target must be one of {', '.join(CRITIC_TARGETS)}; got "
                      f"{critic_target!r}")
  if advantage not in ADVANTAGES:
    raise ConfigError(f"--advantage must be one of {', '.join(ADVANTAGES)}; got {advantage!r}")
  flat = jax.tree_util.tree_map(lambda x: x.reshape((-1,) + x.shape[batch.action.ndim:]), batch)
  log_policy = log_policy or _log_softmax
  logits, q = net.apply(params, flat.history)
  logits_next, q_next = net.apply(params, flat.next_history)
  if critic_target == "max":
    v_next = q_next.max(axis=1)
  else:
    v_next = jnp.sum(jnp.exp(log_policy(logits_next, flat.next_history)) * q_next, axis=1)
  logp = log_policy(logits, flat.history)
  idx = flat.action[:, None]
  logp_a = jnp.take_along_axis(logp, idx, axis=1)[:, 0]
  q_sa = jnp.take_along_axis(q, idx, axis=1)[:, 0]
  actor, critic, td = jax.vmap(a2c_loss_single, in_axes=(0, 0, 0, 0, 0, None))(
      logp_a, q_sa, v_next, flat.reward, flat.done.astype(jnp.float32), gamma)
  if advantage == "baseline":
    weight = q_sa - jnp.sum(jnp.exp(logp) * q, axis=1)
    actor = -logp_a * jax.lax.stop_gradient(weight)
  entropy = -jnp.sum(jnp.exp(logp) * logp, axis=-1).mean()
  loss = actor.mean() + critic.mean() - entropy_coef * entropy
  return loss, {"actor_loss": actor.mean(), "critic_loss": critic.mean(),
                "td_abs": jnp.abs(td).mean(), "entropy": entropy}


def check_schedule(schedule: str, critic: str, num_minibatches: int, update_epochs: int) -> None:
  if schedule not in SCHEDULES:
    raise ConfigError(f"--schedule must be one of {', '.join(SCHEDULES)}; got {schedule!r}")
  if num_minibatches <= 0 or update_epochs <= 0:
    raise ConfigError(f"--num_minibatches ({num_minibatches}) and --update_epochs "
                      f"({update_epochs}) must be positive")
  if schedule == "collect" and critic != "v":
    raise ConfigError("--schedule=collect needs --critic=v (minibatch epochs over fixed "
                      "advantages; the Q critic's one-step target is recomputed per step)")
  if schedule == "step" and (num_minibatches, update_epochs) != (1, 1):
    raise ConfigError("--num_minibatches and --update_epochs apply to --schedule=collect")


def default_unroll(critic: str) -> int:
  """Env steps per session per update when not set: 10 for the value critic's lambda-returns,
  1 for the paper's Q critic (an update after every env step)."""
  return 10 if critic == "v" else 1


def with_value_head(actor_critic_params, value_params):
  """ActorCritic params (a pre-training run's) -> ActorValue params: the same encoder and actor,
  the value head of `value_params` (a fresh init) in place of the Q head."""
  inner = {k: v for k, v in actor_critic_params["params"].items() if k != "critic"}
  return {"params": inner | {"value": value_params["params"]["value"]}}


class A2C(optim.GradientAgent):
  """The agent API (jaxrec.agents.types.Agent) for A2C."""

  def __init__(self, cfg: A2CConfig):
    if cfg.critic not in CRITICS:
      raise ConfigError(f"--critic must be one of {', '.join(CRITICS)}; got {cfg.critic!r}")
    check_schedule(cfg.schedule, cfg.critic, cfg.num_minibatches, cfg.update_epochs)
    self.cfg = cfg
    self.net = ActorValue(cfg.net) if cfg.critic == "v" else ActorCritic(cfg.net)
    self.unroll_len = cfg.unroll_len or default_unroll(cfg.critic)
    self.optimizer = optim.adam(cfg.learning_rate, cfg.max_grad_norm)

  def logits(self, params, history: jax.Array) -> jax.Array:
    return self.net.apply(params, history)[0]

  @property
  def acts_with_values(self) -> bool:
    """The collect schedule's advantages need V(s_t) under the parameters that collected the
    rollout: exactly what the acting forward computed, so the loop keeps it (Transition.value)
    instead of the update re-encoding T x N histories. Subclasses that act otherwise (a
    mixture, an oracle) do not."""
    return self.cfg.schedule == "collect" and type(self).act is A2C.act  # collect: critic v

  def act_value(self, params, history, key, strategy, epsilon=0.0):
    logits, value = self.net.apply(params, history)
    return acting.select(key, logits, strategy, epsilon), value


  def update(self, state: AgentState, batch: Transition, key: jax.Array):
    params, opt_state, loss, metrics = self.fit(state.params, state.opt_state, batch, key)
    return state._replace(params=params, opt_state=opt_state, step=state.step + 1), (
        metrics | {"loss": loss})

  def fit(self, params, opt_state, batch: Transition, key: jax.Array,
          log_policy: Callable | None = None):
    """The configured schedule's gradient steps on one rollout [T, N]: -> (params, opt_state,
    loss, metrics); loss and metrics are means over the steps taken."""
    if self.cfg.schedule == "step":
      return optim.apply_gradients(self.optimizer, self.loss, params, opt_state, batch,
                                   log_policy)
    c = self.cfg
    _, _, adv, target = value_advantages(self.net, params, batch, c.gamma, c.gae_lambda)
    if c.normalize_advantages:
      adv = standardized(adv)
    flat = jax.tree_util.tree_map(
        lambda x: x.reshape((-1,) + x.shape[2:]),
        Minibatch(batch.history, batch.action, adv, target))
    if flat.action.shape[0] % c.num_minibatches:
      raise ConfigError(f"--num_minibatches ({c.num_minibatches}) must divide the rollout's "
                        f"{flat.action.shape[0]} transitions")
    size = flat.action.shape[0] // c.num_minibatches
    loss_fn = lambda p, mb: minibatch_loss(self.net, p, mb, c.entropy_coef, c.value_coef,
                                           log_policy)

    def minibatch_step(carry, mb: Minibatch):
      p, o = carry
      p, o, loss, metrics = optim.apply_gradients(self.optimizer, loss_fn, p, o, mb)
      return (p, o), metrics | {"loss": loss}

    def epoch(carry, k):
      perm = jax.random.permutation(k, flat.action.shape[0])
      mbs = jax.tree_util.tree_map(
          lambda x: x[perm].reshape((c.num_minibatches, size) + x.shape[1:]), flat)
      return jax.lax.scan(minibatch_step, carry, mbs)

    (params, opt_state), metrics = jax.lax.scan(epoch, (params, opt_state),
                                                jax.random.split(key, c.update_epochs))
    metrics = jax.tree_util.tree_map(jnp.mean, metrics)
    return params, opt_state, metrics.pop("loss"), metrics

  def loss(self, params, batch: Transition, log_policy: Callable | None = None):
    """(loss, metrics) of the configured critic; log_policy: see `a2c_losses`."""
    c = self.cfg
    if c.critic == "v":
      return a2c_value_losses(self.net, params, batch, c.gamma, c.gae_lambda, c.entropy_coef,
                              c.value_coef, c.normalize_advantages, log_policy)
    return a2c_losses(self.net, params, batch, c.gamma, c.entropy_coef, log_policy,
                      c.critic_target, c.advantage)
