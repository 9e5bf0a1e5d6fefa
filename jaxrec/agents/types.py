"""Types shared by every agent and the training loop."""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp

STRATEGIES = ("greedy", "epsilon", "categorical")


class Transition(NamedTuple):
  """One env step of a batch of sessions; leading axes [T, N] in a rollout."""
  # [..., L] int32 the observed history before acting; a pytree (items, rewards [..., L]) for
  # networks with a reward input (NetConfig.reward_handle)
  history: Any
  action: jax.Array  # [...] int32
  reward: jax.Array  # [...] float32
  done: jax.Array  # [...] bool: the episode ended at this step (no bootstrap)
  next_history: Any  # as history (a fresh episode's where done; masked by done)
  # [...] float32 V(history) as the acting forward computed it, for agents whose `act_value`
  # the loop calls (their update then need not re-encode the rollout); None otherwise.
  value: Any = None


class AgentState(NamedTuple):
  """What every agent carries through the loop. `extra` is agent-specific (target params,
  replay buffer state, ...)."""
  params: Any
  opt_state: Any
  step: jax.Array  # int32 number of updates so far
  extra: Any = ()


class Agent(Protocol):
  """The agent API of DESIGN.md. All methods are pure and jittable."""
  unroll_len: int  # env steps per session collected before each `update`

  def init(self, key: jax.Array) -> AgentState:
    ...

  def act(self, params, history: jax.Array, key: jax.Array, strategy: str,
          epsilon: float | jax.Array = 0.0) -> jax.Array:
    """history [N, L] -> actions [N] int32."""
    ...

  def update(self, state: AgentState, batch: Transition,
             key: jax.Array) -> tuple[AgentState, dict]:
    """batch: a rollout Transition [unroll_len, N, ...]."""
    ...

  def policy_params(self, state: AgentState):
    """The params `act` needs (what export saves)."""
    ...

  # Optional: `act_value(params, history, key, strategy, epsilon) -> (actions [N], values [N])`
  # where `acts_with_values` is True; the loop then stores the values in Transition.value.


def strong_types(tree):
  """`tree` with every weak-typed leaf made strongly typed (same dtype and values).

  flashbax's buffer index comes out of `init` and `add` weak-typed (a Python-int update); an
  orbax checkpoint restores it strongly typed, so the jitted loop would compile a second time
  after every resume. Agents pass their buffer state through this."""
  return jax.tree_util.tree_map(
      lambda x: jax.lax.convert_element_type(x, jnp.asarray(x).dtype), tree)
