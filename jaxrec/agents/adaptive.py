"""iALP-to-online agents (paper Sec. 4.2, Alg. 2): iALP (frozen), A-iALP_ft and A-iALP_ap.

- `ialp` (`Frozen`): the pre-trained policy acting with no update, the paper's baseline row
  "iALP ... providing recommendations without further exploration or updates" (Sec. 5.2).
- `ialp_ft` (`FineTune`): A2C whose params start from iALP (Eq. 11-13: the env reward
  replaces r^p in the same losses).
- `ialp_ap` (`AdaptivePolicy`): pi_theta (iALP) frozen, pi_beta learnable with its own encoder
  and critic; actions from the mixture (Eq. 14, with the typo fixed: see papers/README.md)

      pi~(. | s) = (1 - alpha_t) pi_theta(. | s) + alpha_t pi_beta(. | s)

  and the actor loss -log pi~(a | s) * A(s, a) (Eq. 15 with the advantage of Eq. 9-10, through
  a2c's `log_policy` hook); the critic and encoder of beta learn from the env reward exactly as
  in ft (Sec. 4.3). alpha_t rises from alpha_0 to 1 on an `AlphaSchedule` over updates.
  pi_beta starts random (Sec. 5.4) or as a copy of theta (Alg. 2 line 3).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from jaxrec.agents import acting
from jaxrec.agents.a2c import A2C, A2CConfig, with_value_head
from jaxrec.agents.types import AgentState, Transition
from jaxrec.errors import ConfigError
from jaxrec.nets.networks import ActorCritic, init_params

SHAPES = ("linear", "cosine", "step")
BETA_INITS = ("random", "theta")


class FineTune(A2C):
  """A-iALP_ft: A2C starting from the pre-trained params (Eq. 11-13; Alg. 2 line 8 samples
  from pi_theta, the network being fine-tuned). A fresh optimizer: pre-training's Adam
  moments belong to another reward."""

  def __init__(self, cfg: A2CConfig, pretrained=None):
    super().__init__(cfg)
    self.pretrained = pretrained  # None: random init of the same shapes (restoring only)

  def init(self, key: jax.Array, params=None) -> AgentState:
    if params is None and self.pretrained is not None:
      params = jax.tree_util.tree_map(jnp.asarray, self.pretrained)
      if self.cfg.critic == "v":  # iALP's encoder and actor; a fresh value head
        params = with_value_head(params, self.init_params(key))
    return super().init(key, params)


class Frozen(FineTune):
  """iALP: the pre-trained actor-critic acting as it is; `update` changes nothing."""

  def update(self, state: AgentState, batch: Transition, key: jax.Array):
    del batch, key
    return state, {}


@dataclasses.dataclass(frozen=True)
class AlphaSchedule:
  """alpha over updates t: alpha0 until `delay`, then to 1 over `length` updates, then 1.

  linear: a straight ramp; cosine: a half-cosine ramp (slow start and end); step: alpha0 until
  delay + length, then 1.
  """
  alpha0: float = 0.1
  delay: int = 0
  length: int = 100
  shape: str = "linear"

  def validate(self) -> None:
    if not 0.0 <= self.alpha0 <= 1.0:
      raise ConfigError(f"--alpha0 must be in [0, 1], got {self.alpha0}")
    if self.delay < 0 or self.length < 0:
      raise ConfigError("--alpha_delay and --alpha_steps must be >= 0")
    if self.shape not in SHAPES:
      raise ConfigError(f"--alpha_shape must be one of {', '.join(SHAPES)}; got {self.shape!r}")

  def __call__(self, t: jax.Array) -> jax.Array:
    """alpha at update t (int or int array) -> float32."""
    length = max(self.length, 1)
    if self.shape == "linear":
      return jnp.asarray(optax.linear_schedule(self.alpha0, 1.0, length, self.delay)(t),
                         jnp.float32)
    if self.shape == "cosine":  # 1 - alpha decays from 1 - alpha0 to 0 along a half cosine
      decay = optax.join_schedules([optax.constant_schedule(1.0 - self.alpha0),
                                    optax.cosine_decay_schedule(1.0 - self.alpha0, length)],
                                   [self.delay])
      return 1.0 - jnp.asarray(decay(t), jnp.float32)
    return jnp.where(t >= self.delay + self.length, 1.0, self.alpha0).astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class AdaptiveConfig(A2CConfig):
  alpha: AlphaSchedule = AlphaSchedule()
  beta_init: str = "random"

  def validate(self) -> None:
    self.alpha.validate()
    if self.beta_init not in BETA_INITS:
      raise ConfigError(f"--beta_init must be one of {', '.join(BETA_INITS)}; "
                        f"got {self.beta_init!r}")


def mixture_log_probs(logits_theta: jax.Array, logits_beta: jax.Array,
                      alpha: jax.Array) -> jax.Array:
  """log((1 - alpha) softmax(logits_theta) + alpha softmax(logits_beta)), [..., I].

  Computed as a logsumexp of the two weighted log-policies, so neither underflows; at alpha 0
  (or 1) the empty component's weight is log 0 = -inf and contributes nothing (and no NaN
  gradient: logaddexp's derivative there is exactly 0).
  """
  alpha = jnp.asarray(alpha, jnp.float32)
  log_w_theta = jnp.where(alpha < 1.0, jnp.log1p(-jnp.minimum(alpha, 1.0)), -jnp.inf)
  log_w_beta = jnp.where(alpha > 0.0, jnp.log(jnp.maximum(alpha, 1e-38)), -jnp.inf)
  return jnp.logaddexp(log_w_theta + jax.nn.log_softmax(logits_theta),
                       log_w_beta + jax.nn.log_softmax(logits_beta))


class AdaptivePolicy(A2C):
  """A-iALP_ap. params = {"theta": frozen iALP, "beta": learnable}; the optimizer sees only
  beta; policy_params adds the current alpha, so `act` and an export need nothing else."""

  def __init__(self, cfg: AdaptiveConfig, pretrained=None):
    cfg.validate()
    super().__init__(cfg)
    self.schedule = cfg.alpha
    self.pretrained = pretrained  # theta; None: random init of the same shapes (restoring)
    self.theta_net = ActorCritic(cfg.net)  # theta is always a pre-training run's ActorCritic

  def init(self, key: jax.Array, params=None) -> AgentState:
    """params: theta (ActorCritic params); default the pre-trained ones."""
    k_theta, k_beta = jax.random.split(key)
    theta = params if params is not None else self.pretrained
    theta = (init_params(self.theta_net, k_theta) if theta is None
             else jax.tree_util.tree_map(jnp.asarray, theta))
    beta = self.init_params(k_beta)
    if self.cfg.beta_init == "theta":
      beta = with_value_head(theta, beta) if self.cfg.critic == "v" else theta
    return AgentState(params={"theta": theta, "beta": beta},
                      opt_state=self.optimizer.init(beta), step=jnp.int32(0))

  def policy_params(self, state: AgentState):
    return state.params | {"alpha": self.schedule(state.step)}

  def log_policy(self, params, history: jax.Array) -> jax.Array:
    """history [N, L] -> log pi~ [N, I] of the mixture with params["alpha"]."""
    return mixture_log_probs(self.theta_net.apply(params["theta"], history)[0],
                             self.logits(params["beta"], history), params["alpha"])

  def act(self, params, history, key, strategy, epsilon=0.0, allowed=None):
    # categorical samples the mixture; greedy takes its mode; epsilon its mode or a uniform item
    return acting.select(key, self.log_policy(params, history), strategy, epsilon, allowed)

  def update(self, state: AgentState, batch: Transition, key: jax.Array):
    theta = state.params["theta"]
    alpha = self.schedule(state.step)

    def log_policy(logits_beta, history):  # pi~ at the histories the losses evaluate
      logits_theta = jax.lax.stop_gradient(self.theta_net.apply(theta, history)[0])
      return mixture_log_probs(logits_theta, logits_beta, alpha)

    beta, opt_state, loss, metrics = self.fit(state.params["beta"], state.opt_state, batch,
                                              key, log_policy)
    return state._replace(params={"theta": theta, "beta": beta}, opt_state=opt_state,
                          step=state.step + 1), metrics | {"loss": loss, "alpha": alpha}
