"""A trained policy as a self-contained directory, and its evaluation from that directory alone.

Export directory (`export_run`, CLI `python -m jaxrec.export --workdir=RUN --out=DIR`):
  config.json              format, agent + net config, the env it was trained on (dataset,
                           fingerprint, num_items, history_len, max_len), the default strategy
                           and epsilon, the param leaves (path, shape, dtype), the source run and
                           epoch, its last metrics row, and the sha256 of every file below
  params.npz               the policy params as flat leaves `leaf_00000`, ... (tree order)
  act_<strategy>.jaxexport `jax.export`-serialized act(params, history, key, allowed) -> actions,
                           one per strategy in greedy, epsilon, categorical:
                             params   list of the leaves of params.npz
                             history  int32 [n, L] (item ids, right-aligned, -1 = padding);
                                      for a policy with a reward input (config.json
                                      act.rewards true) the pair (items, rewards float32
                                      [n, L]: each item's reward normalised by the env's
                                      bounds, jaxrec.envs.base.reward_history)
                             key      uint32 [2] (a raw threefry key, jax.random.PRNGKey)
                             allowed  bool [n, I] items the policy may pick (all True: free;
                                      the NX evaluation modes mask recommended items)
                             actions  int32 [n]
                           n is symbolic: one file serves any batch size. Each file is lowered
                           for cpu, cuda and tpu. epsilon (strategy `epsilon`) is the run's,
                           baked in and recorded in config.json.

`load_export(dir)` verifies the hashes and deserializes; `evaluate_export(...)` runs the paper's
test-env metrics (jaxrec.train.loop.evaluate) with the deserialized function as the policy: no
agent class or network code is involved, so an export outlives changes to them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import export as jax_export

from jaxrec.agents.types import STRATEGIES
from jaxrec.errors import ConfigError, DataError
from jaxrec.io import (atomic_savez, atomic_write_text, read_json_object, read_npz,
                       sha256_file, umask)

if TYPE_CHECKING:  # the env stack is imported only where a policy is evaluated
  from jaxrec.envs.store import EnvMeta

FORMAT = 2  # 2: act takes `allowed` (the NX evaluation modes)
CONFIG = "config.json"
PARAMS = "params.npz"
PLATFORMS = ("cpu", "cuda", "tpu")


def act_file(strategy: str) -> str:
  return f"act_{strategy}.jaxexport"


def _leaf_name(i: int) -> str:
  return f"leaf_{i:05d}"


def export_policy(agent, params, out: str, *, epsilon: float, strategy: str, meta: dict) -> dict:
  """Writes params, config and one serialized `act` per strategy into `out` (atomically: a temp
  directory renamed into place). `meta` goes into config.json as is. Returns the config."""
  if os.path.exists(out):
    raise DataError(f"{out}: already exists; remove it or pick another --out")
  if strategy not in STRATEGIES:
    raise ConfigError(f"strategy must be one of {', '.join(STRATEGIES)}; got {strategy!r}")
  leaves, treedef = jax.tree_util.tree_flatten(params)
  leaves = [np.asarray(x) for x in leaves]
  paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
  history_len = int(meta["env"]["history_len"])
  (n,) = jax_export.symbolic_shape("n")
  rewards = bool(agent.cfg.net.with_rewards)
  history = jax.ShapeDtypeStruct((n, history_len), jnp.int32)
  if rewards:
    history = (history, jax.ShapeDtypeStruct((n, history_len), jnp.float32))
  args = ([jax.ShapeDtypeStruct(x.shape, x.dtype) for x in leaves], history,
          jax.ShapeDtypeStruct((2,), jnp.uint32),
          jax.ShapeDtypeStruct((n, int(meta["env"]["num_items"])), jnp.bool_))
  blobs = {}
  for s in STRATEGIES:
    def act(leaves, history, key, allowed, s=s):
      return agent.act(jax.tree_util.tree_unflatten(treedef, leaves), history, key, s, epsilon,
                       allowed=allowed)
    blobs[s] = jax_export.export(jax.jit(act), platforms=PLATFORMS)(*args).serialize()

  parent = os.path.dirname(os.path.abspath(out))
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=".tmp-export-", dir=parent)
  try:
    os.chmod(tmp, 0o777 & ~umask())
    atomic_savez(os.path.join(tmp, PARAMS), **{_leaf_name(i): x for i, x in enumerate(leaves)})
    for s, blob in blobs.items():
      with open(os.path.join(tmp, act_file(s)), "wb") as f:
        f.write(blob)
    config = {
        "format": FORMAT,
        **meta,
        "strategy": strategy,
        "epsilon": float(epsilon),
        "act": {"signature": "act(params: list[leaf], history: "
                             + ("(int32[n, L], float32[n, L])" if rewards else "int32[n, L]")
                             + ", key: uint32[2], allowed: bool[n, I]) -> int32[n]",
                "rewards": rewards, "platforms": list(PLATFORMS),
                "files": {s: act_file(s) for s in STRATEGIES}},
        "params": [{"path": p, "shape": list(x.shape), "dtype": str(x.dtype)}
                   for p, x in zip(paths, leaves)],
        "jax_version": jax.__version__,
        "sha256": {name: sha256_file(os.path.join(tmp, name))
                   for name in [PARAMS] + [act_file(s) for s in STRATEGIES]},
    }
    atomic_write_text(os.path.join(tmp, CONFIG), json.dumps(config, indent=2) + "\n")
    os.rename(tmp, out)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return config


def export_run(workdir: str, out: str, step: int | None = None, env: str | None = None,
               log=print) -> dict:
  """Exports the policy of a training run (its latest epoch, or `step`). `env` replaces the
  env directory recorded in the run's flags (moved env)."""
  from jaxrec import checkpoint  # the training stack is needed to write, never to read

  if os.path.exists(out):
    raise DataError(f"{out}: already exists; remove it or pick another --out")
  agent, params, run = checkpoint.restore_policy(workdir, step, env)
  cfg, env_meta = run.cfg, run.env_meta
  net = agent.cfg.net
  meta = {
      "agent": cfg.agent,
      "agent_cfg": dataclasses.asdict(cfg.agent_cfg),
      "net": dataclasses.asdict(net),
      "env": {"dataset": env_meta.dataset, "fingerprint": env_meta.fingerprint,
              "kind": env_meta.kind, "num_items": int(net.num_items),
              "history_len": int(net.history_len),
              "max_len": env_meta.max_len},
      "source": {"workdir": os.path.abspath(workdir), "epoch": run.step,
                 "env_steps": int(run.runner.env_steps), "seed": cfg.seed,
                 "train_explore": cfg.explore,
                 "last_metrics": (run.log.get("metrics") or [None])[-1]},
  }
  config = export_policy(agent, params, out, epsilon=cfg.epsilon,
                         strategy=cfg.eval_explore or cfg.explore, meta=meta)
  log(f"exported {cfg.agent} (epoch {run.step}, {meta['source']['env_steps']} env steps) "
      f"of {workdir} to {out}")
  return config


@dataclasses.dataclass(frozen=True)
class ExportedPolicy:
  """A loaded export. `act` has the shape of the Agent API's act, so the generic evaluation
  loop runs it unchanged; `params` are the leaves of params.npz."""
  directory: str
  config: dict
  params: list
  functions: dict  # strategy -> jax.export.Exported

  @property
  def with_rewards(self) -> bool:
    """act takes (items, rewards) as its history (exports written before rewards: False)."""
    return bool(self.config["act"].get("rewards", False))

  def act(self, params, history: jax.Array, key: jax.Array, strategy: str,
          epsilon: Any = None, allowed: jax.Array | None = None) -> jax.Array:
    """history [n, L] int32 -> actions [n] int32. epsilon is the exported one (baked in);
    allowed [n, I] bool (default all)."""
    del epsilon
    if strategy not in self.functions:
      raise ConfigError(f"--strategy must be one of {', '.join(self.functions)}; "
                        f"got {strategy!r}")
    if allowed is None:
      n = jax.tree_util.tree_leaves(history)[0].shape[0]
      allowed = jnp.ones((n, self.config["env"]["num_items"]), bool)
    return self.functions[strategy].call(params, history, key, allowed)


def _read_config(directory: str) -> dict:
  path = os.path.join(directory, CONFIG)
  if not os.path.isdir(directory):
    raise DataError(f"{directory}: no such export directory")
  if not os.path.isfile(path):
    raise DataError(f"{directory}: not an export directory (no {CONFIG}); write one with "
                    "python -m jaxrec.export --workdir=RUN --out=DIR")
  config = read_json_object(path)
  if config.get("format") != FORMAT:
    raise DataError(f"{path}: export format {config.get('format')}, expected {FORMAT}")
  for k in ("sha256", "params", "env", "act", "strategy"):
    if k not in config:
      raise DataError(f"{path}: missing field {k!r}")
  problem = _config_problem(config)
  if problem:
    raise DataError(f"{path}: {problem}")
  return config


def _is_int(value, least: int = 1) -> bool:
  return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _config_problem(config: dict) -> str | None:
  """What is wrong with the fields of config.json that loading and evaluation read, or None.
  The hashes must cover exactly params.npz and the act files, which are the writer's names:
  nothing outside the export is read, and nothing is read unverified."""
  act = config["act"]
  files = act.get("files") if isinstance(act, dict) else None
  if not (isinstance(files, dict) and files
          and all(s in STRATEGIES and f == act_file(s) for s, f in files.items())):
    return (f"act.files: expected {{strategy: act_<strategy>.jaxexport}} for strategies of "
            f"{', '.join(STRATEGIES)}")
  sha = config["sha256"]
  covered = {PARAMS, *files.values()}
  if not (isinstance(sha, dict) and set(sha) == covered
          and all(isinstance(v, str) for v in sha.values())):
    return f"sha256: expected the digests of exactly {', '.join(sorted(covered))}"
  if not isinstance(config["strategy"], str) or config["strategy"] not in files:
    return f"strategy {config['strategy']!r}: no act file for it"
  if not isinstance(act.get("rewards", False), bool):
    return f"act.rewards {act.get('rewards')!r}: expected true or false"
  eps = config.get("epsilon")
  if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0.0 <= eps <= 1.0:
    return f"epsilon {eps!r}: expected a number in [0, 1]"
  env = config["env"]
  if not (isinstance(env, dict)
          and all(isinstance(env.get(k), str) for k in ("dataset", "fingerprint"))
          and all(_is_int(env.get(k)) for k in ("num_items", "history_len", "max_len"))):
    return ("env: expected dataset and fingerprint (strings), num_items, history_len and "
            "max_len (positive integers)")
  params = config["params"]
  if not (isinstance(params, list) and all(
      isinstance(p, dict) and isinstance(p.get("path"), str) and isinstance(p.get("dtype"), str)
      and isinstance(p.get("shape"), list) and all(_is_int(d, 0) for d in p["shape"])
      for p in params)):
    return "params: expected a list of {path, shape, dtype}"
  return None


def load_export(directory: str) -> ExportedPolicy:
  """Reads and verifies an export directory (hashes, leaf shapes, function signatures)."""
  config = _read_config(directory)
  for name, digest in config["sha256"].items():
    path = os.path.join(directory, name)
    if not os.path.isfile(path):
      raise DataError(f"{path}: missing from the export")
    if sha256_file(path) != digest:
      raise DataError(f"{path}: sha256 mismatch with {CONFIG} (corrupt or partly copied)")
  params_path = os.path.join(directory, PARAMS)
  arrays = read_npz(params_path, label="unreadable")
  names = [_leaf_name(i) for i in range(len(config["params"]))]
  if sorted(arrays) != names:
    raise DataError(f"{params_path}: holds {len(arrays)} arrays, expected the {len(names)} "
                    f"leaves {CONFIG} lists")
  leaves = [arrays[n] for n in names]
  for leaf, spec in zip(leaves, config["params"]):
    if list(leaf.shape) != spec["shape"] or str(leaf.dtype) != spec["dtype"]:
      raise DataError(f"{params_path}: leaf {spec['path']!r} is {leaf.dtype}{list(leaf.shape)}, "
                      f"config says {spec['dtype']!r}{spec['shape']}")
  functions = {}
  for s, name in config["act"]["files"].items():
    path = os.path.join(directory, name)
    try:
      with open(path, "rb") as f:
        functions[s] = jax_export.deserialize(bytearray(f.read()))
    except Exception as e:  # flatbuffers / MLIR errors have no common type
      raise DataError(f"{path}: not a serialized jax.export function ({type(e).__name__})"
                      ) from None
    avals = functions[s].in_avals
    rewards = bool(config["act"].get("rewards", False))
    history_args = ((jnp.int32, "items"), (jnp.float32, "rewards"))[:1 + rewards]
    if len(avals) != len(leaves) + len(history_args) + 2:
      raise DataError(f"{path}: takes {len(avals)} arrays, expected "
                      f"{len(leaves)} param leaves + history{' + rewards' if rewards else ''} "
                      "+ key + allowed")
    history_len = config["env"]["history_len"]
    for i, (aval, leaf) in enumerate(zip(avals, leaves)):
      if aval.shape != leaf.shape or aval.dtype != leaf.dtype:
        raise DataError(f"{path}: argument {i} is {aval.dtype}{list(aval.shape)}, the param "
                        f"leaf is {leaf.dtype}{list(leaf.shape)}")
    for aval, (dtype, what) in zip(avals[len(leaves):], history_args):
      if len(aval.shape) != 2 or aval.shape[1] != history_len or aval.dtype != dtype:
        raise DataError(f"{path}: history {what} argument is {aval.dtype}{aval.shape}, "
                        f"expected {jnp.dtype(dtype).name}[n, {history_len}]")
    num_items = config["env"]["num_items"]
    if (len(avals[-1].shape) != 2 or avals[-1].shape[1] != num_items
        or avals[-1].dtype != jnp.bool_):
      raise DataError(f"{path}: allowed argument is {avals[-1].dtype}{avals[-1].shape}, "
                      f"expected bool[n, {num_items}]")
  return ExportedPolicy(directory=directory, config=config,
                        params=[jnp.asarray(x) for x in leaves], functions=functions)


def check_env_matches(policy: ExportedPolicy, env, env_meta: EnvMeta, env_dir: str) -> None:
  """One-line DataError when the env is not the one the policy's item ids refer to."""
  want = policy.config["env"]
  if env_meta.fingerprint != want["fingerprint"]:
    raise DataError(f"{env_dir}: built from dataset {env_meta.dataset!r} fingerprint "
                    f"{env_meta.fingerprint}, but the export was trained on "
                    f"{want['dataset']!r} fingerprint {want['fingerprint']}")
  if env.num_actions != want["num_items"]:
    raise DataError(f"{env_dir}: {env.num_actions} items, the export acts over "
                    f"{want['num_items']}")
  if env.history_len != want["history_len"]:
    raise DataError(f"{env_dir}: history_len {env.history_len}, the export expects "
                    f"{want['history_len']}")


def evaluate_export(export: str | ExportedPolicy, env_dir: str, num_sessions: int,
                    key: jax.Array, strategy: str | None = None, which: str = "test",
                    mode: str = "FB") -> dict:
  """The paper's metrics (R, Len, Ravg, R_std; Sec. 5.3) of an export in the `which` env of
  `env_dir`: one episode in each of num_sessions fresh sessions. Same key -> same numbers as
  `jaxrec.train.loop.evaluate` on the live params (bit-exact on CPU)."""
  from jaxrec.envs import build
  from jaxrec.train.loop import evaluate

  policy = load_export(export) if isinstance(export, str) else export
  strategy = strategy or policy.config["strategy"]
  if strategy not in policy.functions:
    raise ConfigError(f"--strategy must be one of {', '.join(policy.functions)}; "
                      f"got {strategy!r}")
  if num_sessions <= 0:
    raise ConfigError(f"--sessions must be positive, got {num_sessions}")
  env, env_params, meta = build.load_env(env_dir, which)
  check_env_matches(policy, env, meta, env_dir)
  max_len = meta.max_len
  from jaxrec.train.evaluation import env_popularity
  popularity = env_popularity(env_dir)
  fn = jax.jit(lambda params, key, env_params, popularity: evaluate(
      policy, params, env, env_params, key, num_sessions, max_len, strategy,
      policy.config["epsilon"], mode, popularity))
  metrics = fn(policy.params, key, env_params, popularity)
  return {k: float(v) for k, v in metrics.items()} | {
      "sessions": num_sessions, "strategy": strategy, "env": which, "eval_mode": mode,
      "protocol": meta.protocol}
