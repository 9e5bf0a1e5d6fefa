"""Sessions sharded over devices and hosts with JAX's own machinery (jax.sharding, jit, orbax).

One mesh axis, `data`, of D devices (on one host, or every device of every process under
`jax.distributed`). Per-session arrays (the env state and the histories of the RunnerState:
leading axis num_sessions) are split into D blocks of num_sessions / D sessions; everything
else (params, optimizer state, the DQN replay buffer, keys, curve buffers) is replicated. The
training step is the unchanged `jaxrec.train.loop` program jitted with these in/out shardings:
XLA's partitioner gives each device its block of sessions and inserts the all-reduce of the
gradients (A2C / PG: the loss is a mean over the [T, N] rollout, so its gradient is a
cross-device sum). Same seed and global num_sessions -> the same numbers on 1 or D devices, up
to float summation order (tests/train/test_sharding.py). In a multi-process run each process
computes and holds only the sessions of its own devices; orbax writes and reads each shard from
the process that owns it.

Why no `model` axis for the item-sized tensors. The biggest are the actor and critic heads,
[dim, num_items] f32 each, and the item embedding [num_items, dim]; with Adam's two moments
that is 3 tensors x 3 copies x 4 bytes x dim x num_items = 2.3 MB for the synthetic default
(dim 64, 1,000 items), 28 MB at 12,000 items (LastFM-sized) and 2.3 GB even at a million
items: every accelerator holds them. Replicating them costs one all-reduce of the gradient per
update (what data parallelism pays anyway), while a `model` axis would add an all-gather of the
[N, num_items] logits for every softmax / max over items at every env step. Sessions, not
parameters, are what outgrow a device here (docs/scaling.md has the bytes per session).

  mesh = make_mesh(MeshConfig.parse("data:8"))
  check_sessions(mesh, num_sessions=cfg.num_sessions, eval_sessions=cfg.eval_sessions)
  agent = ShardedActing(agent, mesh)          # pins act()'s [N, L] input to the data axis
  init_runner, train_epoch = make_train(loop_cfg, agent, env)
  env_params = replicate(env_params, mesh)
  init_runner, train_epoch, shardings = jit_loop(mesh, init_runner, train_epoch, env_params)
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from typing import Any, Callable

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from jaxrec.errors import ConfigError

DATA = "data"
# RunnerState fields whose leaves carry the session axis first (jaxrec.train.loop).
SESSION_FIELDS = ("env_state", "history")
_SPEC = re.compile(r"^data:(all|-?\d+)$")


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  """How many devices the `data` axis spans.

  data: N > 0 exactly N devices (the first N of jax.devices()); -1 every device of every
    process; 0 auto = 1 device in a single process (today's behaviour: a host shared by
    several jobs, or a num_sessions that does not divide by its GPU count, keeps working
    unchanged) and every device under jax.distributed (the only mesh that spans all
    processes, which a multi-process run needs).
  """
  data: int = 0

  @classmethod
  def parse(cls, spec: str) -> MeshConfig:
    """--mesh value: "" or "auto", "data:N", "data:all"."""
    spec = (spec or "").strip()
    if spec in ("", "auto"):
      return cls(0)
    m = _SPEC.match(spec)
    if not m or (m.group(1) != "all" and int(m.group(1)) <= 0):
      raise ConfigError(f"--mesh must be auto, data:N (N > 0) or data:all; got {spec!r}")
    return cls(-1 if m.group(1) == "all" else int(m.group(1)))

  def size(self) -> int:
    """The data-axis size on this machine / cluster (initializes the JAX backend)."""
    if self.data == -1:
      return jax.device_count()
    if self.data == 0:
      return jax.device_count() if jax.process_count() > 1 else 1
    return self.data

  def flag(self) -> str:
    return {0: "auto", -1: "data:all"}.get(self.data, f"data:{self.data}")


def maybe_initialize_distributed(coordinator_address: str | None = None,
                                 num_processes: int | None = None,
                                 process_id: int | None = None,
                                 initialization_timeout: int = 300) -> bool:
  """jax.distributed.initialize for a multi-process run; a no-op (False) when no flag is set
  or num_processes is 1. Must run before anything touches a JAX device.

  Every process gets the same coordinator_address (host:port of process 0's host, reachable
  from all) and num_processes, and its own process_id in 0..num_processes-1. On CPU the
  collectives between processes are gloo's (TCP).
  """
  given = {"--coordinator_address": coordinator_address, "--num_processes": num_processes,
           "--process_id": process_id}
  if all(v is None for v in given.values()) or (num_processes == 1 and process_id in (None, 0)):
    return False
  missing = [k for k, v in given.items() if v is None or v == ""]
  if missing:
    raise ConfigError(f"a multi-process run needs --coordinator_address, --num_processes and "
                      f"--process_id together; missing {', '.join(missing)}")
  if num_processes < 1:
    raise ConfigError(f"--num_processes must be positive, got {num_processes}")
  if not 0 <= process_id < num_processes:
    raise ConfigError(f"--process_id must be in 0..{num_processes - 1}, got {process_id}")
  if not re.match(r"^\[?[\w.:-]+\]?:\d+$", coordinator_address):
    raise ConfigError(f"--coordinator_address must be host:port, got {coordinator_address!r}")
  if jax.distributed.is_initialized():
    return True
  if jax.config.jax_cpu_collectives_implementation in (None, "", "none"):
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id,
                             initialization_timeout=initialization_timeout)
  return True


def request_cpu_devices(n: int) -> bool:
  """Asks JAX for n CPU devices (`jax_num_cpu_devices`), so that --mesh=data:N runs on a
  CPU-only host without XLA_FLAGS: one XLA:CPU device leaves part of a multi-core CPU idle on
  the simulators' small ops, and N host devices each run their share of the sessions
  (docs/performance.md, Throughput). Only before JAX's backends start, and only where the
  user did not force a count with XLA_FLAGS; on GPU / TPU hosts it shapes the unused CPU
  backend only.
  Returns whether it was applied."""
  if n <= 1 or "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
    return False
  try:
    jax.config.update("jax_num_cpu_devices", n)
  except RuntimeError:  # backends already started: make_mesh names the fix if n is missing
    return False
  return True


def make_mesh(cfg: MeshConfig = MeshConfig()) -> Mesh:
  """A 1-D `data` mesh over the first cfg.size() devices (Auto axis: XLA propagates)."""
  n, have = cfg.size(), jax.device_count()
  if n > have:
    hint = ("; on CPU start with XLA_FLAGS=--xla_force_host_platform_device_count="
            f"{n}" if jax.default_backend() == "cpu" else "")
    raise ConfigError(f"--mesh={cfg.flag()} needs {n} devices; {have} visible{hint}")
  if jax.process_count() > 1 and n != have:
    raise ConfigError(f"--mesh={cfg.flag()}: a {jax.process_count()}-process run must use "
                      f"every device ({have}); use --mesh=data:all")
  return jax.make_mesh((n,), (DATA,), axis_types=(AxisType.Auto,),
                       devices=jax.devices()[:n])


def data_size(mesh: Mesh) -> int:
  return mesh.shape[DATA]


def check_sessions(mesh: Mesh | int, **counts: int) -> None:
  """One-line ConfigError unless every count (flag name = value) divides by the data-axis
  size (of the mesh, or the size itself)."""
  d = mesh if isinstance(mesh, int) else data_size(mesh)
  for name, n in counts.items():
    if n % d:
      raise ConfigError(f"--{name} ({n}) must be a multiple of the data-axis size {d} "
                        f"(--mesh=data:{d}): each device takes the same number of sessions")


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def sessions(mesh: Mesh) -> NamedSharding:
  """Leading (session) axis split over `data`, the rest whole."""
  return NamedSharding(mesh, P(DATA))


def runner_shardings(mesh: Mesh, runner) -> Any:
  """RunnerState (concrete or abstract) -> the same structure of NamedShardings: SESSION_FIELDS
  leaves over `data`, the rest (agent, key, curve buffers, counters) replicated."""
  rep, ses = replicated(mesh), sessions(mesh)
  n = jax.tree_util.tree_leaves(runner.history)[0].shape[0]
  per_session = lambda x: ses if x.ndim >= 1 and x.shape[0] == n else rep
  return runner._replace(**{
      f: jax.tree.map(per_session, getattr(runner, f)) if f in SESSION_FIELDS
      else jax.tree.map(lambda _: rep, getattr(runner, f))
      for f in runner._fields})


def abstract(tree, shardings) -> Any:
  """ShapeDtypeStructs carrying the shardings: orbax's restore target, so every process reads
  only its own shards (and a checkpoint saved on D devices restores on any other D')."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      tree, shardings)


def put(tree, shardings) -> Any:
  """Host or single-device values (the same on every process) -> global arrays with these
  shardings; each process fills only its addressable shards."""

  def one(x, s):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, s, lambda idx: x[idx])

  return jax.tree.map(one, tree, shardings)


def replicate(tree, mesh: Mesh) -> Any:
  """put() every leaf replicated (env params, keys)."""
  return put(tree, jax.tree.map(lambda _: replicated(mesh), tree))


def constrain_sessions(tree, mesh: Mesh) -> Any:
  """Inside jit: pins every leaf's leading (session) axis to `data`. For arrays made inside a
  jitted function from replicated inputs (fresh sessions, e.g. in evaluate()), which XLA would
  otherwise compute whole on every device."""
  return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, sessions(mesh)), tree)


class ShardedActing:
  """The agent with act()'s history [N, L] and actions [N] pinned to the `data` axis.

  act() is where every loop meets the batch of sessions (the train loop and evaluate(), both
  in jaxrec.train.loop), so this one constraint shards evaluation's fresh sessions too, for
  every agent and without changing the loop. Every other attribute is the agent's own.
  """

  def __init__(self, agent, mesh: Mesh):
    self._agent = agent
    self._mesh = mesh

  def __getattr__(self, name: str):
    return getattr(self._agent, name)

  def act(self, params, history, key, strategy, epsilon=0.0, allowed=None):
    history = constrain_sessions(history, self._mesh)
    if allowed is not None:
      allowed = constrain_sessions(allowed, self._mesh)
    action = self._agent.act(params, history, key, strategy, epsilon, allowed=allowed)
    return constrain_sessions(action, self._mesh)

  def act_value(self, params, history, key, strategy, epsilon=0.0):
    action, value = self._agent.act_value(params, constrain_sessions(history, self._mesh), key,
                                          strategy, epsilon)
    return constrain_sessions(action, self._mesh), constrain_sessions(value, self._mesh)


def jit_loop(mesh: Mesh, init_runner: Callable, train_epoch: Callable, env_params):
  """jit of make_train's pair with shardings -> (init_runner, train_epoch, runner_shardings).

  init_runner(key, env_params) returns the RunnerState already sharded (each device builds its
  own sessions); train_epoch(runner, env_params) keeps it so and returns replicated curve
  points. env_params: the replicated params (replicate()), also used for shapes."""
  shape = jax.eval_shape(init_runner, jax.random.PRNGKey(0), env_params)
  shardings = runner_shardings(mesh, shape)
  rep = replicated(mesh)
  init = jax.jit(init_runner, in_shardings=(rep, rep), out_shardings=shardings)
  epoch = jax.jit(train_epoch, in_shardings=(shardings, rep), out_shardings=(shardings, rep))
  return init, epoch, shardings


def jit_replicated(fn: Callable, mesh: Mesh, **jit_kwargs) -> Callable:
  """jit with every output replicated (metrics every process can read)."""
  return jax.jit(fn, out_shardings=replicated(mesh), **jit_kwargs)


def nbytes(tree) -> int:
  return sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize
             for x in jax.tree.leaves(tree))


def runner_bytes(runner) -> dict:
  """Memory of a RunnerState (concrete or abstract): bytes per session (SESSION_FIELDS leaves
  / num_sessions), the replicated part per device, and its replay buffer if it has one."""
  n = jax.tree_util.tree_leaves(runner.history)[0].shape[0]
  per_session = sum(nbytes(getattr(runner, f)) for f in SESSION_FIELDS) / n
  extra = getattr(runner.agent, "extra", ())
  buffer = nbytes(getattr(extra, "buffer_state", ()))
  replicated_bytes = nbytes(runner) - per_session * n
  return {"num_sessions": n, "bytes_per_session": per_session,
          "replicated_bytes": replicated_bytes, "replay_buffer_bytes": buffer,
          "params_bytes": nbytes(runner.agent.params),
          "opt_state_bytes": nbytes(runner.agent.opt_state)}
