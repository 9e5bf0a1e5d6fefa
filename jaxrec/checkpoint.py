"""Read what a training run wrote, without re-running it.

A run directory of `jaxrec.train.run.train_and_evaluate` holds `flags.json` (the TrainConfig)
and `checkpoints/<epoch>/{state,log}` (jaxrec.train.driver's orbax layout: the whole loop
state + the metrics rows). To
restore the state, the restorer needs its structure: we rebuild the agent and the loop from the
flags (`jaxrec.train.run.build_agent`) and take the structure from `jax.eval_shape` of the
loop's `init_runner`, as the run does before it resumes: nothing is trained, and the
pre-training run that an iALP agent started from is not read (the checkpoint holds its params).

  cfg = read_train_config(workdir)
  restored = restore_run(workdir)                 # latest epoch; or step=E
  params = restored.agent.policy_params(restored.runner.agent)   # what `act` needs
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, NamedTuple

import jax

from jaxrec import config
from jaxrec.agents.registry import AgentConfig
from jaxrec.envs.store import EnvMeta
from jaxrec.errors import DataError
from jaxrec.io import one_line, read_json_object
from jaxrec.oracle import OracleConfig
from jaxrec.train import driver, sharding
from jaxrec.train.loop import LoopConfig, make_train
from jaxrec.train.run import TrainConfig, build_agent, train_env_of

CHECKPOINT_DIR = driver.CHECKPOINT_DIR


class RestoredRun(NamedTuple):
  cfg: TrainConfig
  agent: Any  # the agent the run trained (jaxrec.agents.types.Agent)
  runner: Any  # jaxrec.train.loop.RunnerState at the end of epoch `step`
  step: int  # the epoch whose end state this is
  log: dict  # {"metrics": [...], "curve": [...]} as saved with the state
  env_meta: EnvMeta  # env.json of the run's env directory


def _dataclass_from_dict(cls, d, where: str):
  """cls(**d) for the fields cls knows; unknown keys are refused (a newer run format), and so
  is a value of another type than the field's default (a bool for an int, a string for a
  float...): validate() compares numbers and would raise a TypeError on them."""
  if not isinstance(d, dict):
    raise DataError(f"{where}: {cls.__name__}: expected a JSON object, got {type(d).__name__}")
  fields = {f.name: f for f in dataclasses.fields(cls)}
  unknown = sorted(set(d) - set(fields))
  if unknown:
    raise DataError(f"{where}: unknown {cls.__name__} fields {unknown}; written by a newer "
                    "jaxrec?")
  for name, value in d.items():
    if not _same_kind(value, fields[name]):
      default = fields[name].default
      want = "number or null" if default is None else type(default).__name__
      raise DataError(f"{where}: field {name}: expected a {want}, got {value!r}")
  # JSON has no tuples: a list field comes back as a list.
  d = {k: tuple(v) if isinstance(fields[k].default, tuple) else v for k, v in d.items()}
  return cls(**d)


def _same_kind(value, field: dataclasses.Field) -> bool:
  """Whether a JSON value fits a config field (judged by its default, or by its annotation
  when the default is None)."""
  default = field.default
  kind = config.field_kind(field)
  if default is None:
    return value is None or ("float" in kind and _is_number(value)) or (
        "int" in kind and isinstance(value, int) and not isinstance(value, bool))
  if isinstance(default, tuple):
    item = {"tuple[int,...]": int, "tuple[str,...]": str}.get(kind, object)
    return isinstance(value, list) and all(
        isinstance(v, item) and not isinstance(v, bool) for v in value)
  if isinstance(default, bool):
    return isinstance(value, bool)
  if isinstance(default, int):
    return isinstance(value, int) and not isinstance(value, bool)
  if isinstance(default, float):
    return _is_number(value)
  if isinstance(default, str):
    return isinstance(value, str)
  return True  # nested configs are converted by the caller


def _is_number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def read_train_config(workdir: str, env: str | None = None) -> TrainConfig:
  """The TrainConfig of a run directory (its flags.json); `env` replaces the env path saved
  there (an env directory moved to another host)."""
  path = os.path.join(workdir, "flags.json")
  if not os.path.isfile(path):
    raise DataError(f"{workdir}: not a run directory (no flags.json); train one with "
                    "python -m jaxrec.train --workdir=DIR ...")
  d = read_json_object(path)
  agent = d.pop("agent_cfg", {})
  if isinstance(agent, dict):
    # Runs before the nested OracleConfig (2026-11-30) stored its fields flat as oracle_*.
    flat = {k: agent.pop(k) for k in [k for k in agent if k.startswith("oracle_")]}
    oracle = agent.pop("oracle", {k[len("oracle_"):]: v for k, v in flat.items()})
    agent["oracle"] = _dataclass_from_dict(OracleConfig, oracle, path)
  agent_cfg = _dataclass_from_dict(AgentConfig, agent, path)
  cfg = _dataclass_from_dict(TrainConfig, d | {"agent_cfg": agent_cfg}, path)
  if env:
    cfg = dataclasses.replace(cfg, env=env)
  return cfg


def latest_step(workdir: str) -> int | None:
  """The newest finished epoch checkpoint of a run directory, or None."""
  directory = os.path.abspath(os.path.join(workdir, CHECKPOINT_DIR))
  if not os.path.isdir(directory):
    return None
  with driver.checkpoint_manager(workdir) as manager:
    return manager.latest_step()


def abstract_runner(cfg: TrainConfig):
  """-> (agent, abstract RunnerState, env meta): the structure of the run's loop state (shapes
  and dtypes only), built the way `train_and_evaluate` builds it."""
  cfg.validate()
  env, env_params, meta = train_env_of(cfg)
  # The pre-trained agents' init params only fix shapes here: the checkpoint holds the values.
  agent = build_agent(cfg, env, env_params, meta, load_pretrained=False)
  loop_cfg = LoopConfig(num_sessions=cfg.num_sessions, iterations_per_epoch=1,
                        strategy=cfg.explore, epsilon=cfg.epsilon)
  init_runner, _ = make_train(loop_cfg, agent, env)
  shape = jax.eval_shape(init_runner, jax.random.PRNGKey(cfg.seed), env_params)
  return agent, shape, meta


def restore_run(workdir: str, step: int | None = None, env: str | None = None) -> RestoredRun:
  """The loop state saved at the end of epoch `step` (default: the latest) of a run."""
  cfg = read_train_config(workdir, env)
  agent, shape, meta = abstract_runner(cfg)
  # Onto this process's devices, whatever mesh (or hosts) the run was saved from.
  target = sharding.abstract(shape, sharding.runner_shardings(sharding.make_mesh(), shape))
  directory = os.path.abspath(os.path.join(workdir, CHECKPOINT_DIR))
  if not os.path.isdir(directory):
    raise DataError(f"{workdir}: no checkpoints yet (the run has not finished an epoch)")
  with driver.checkpoint_manager(workdir) as manager:
    steps = manager.all_steps()
    if not steps:
      raise DataError(f"{directory}: no finished checkpoint")
    step = max(steps) if step is None else step
    if step not in steps:
      raise DataError(f"{directory}: no checkpoint of epoch {step}; have {sorted(steps)}")
    try:
      runner, log = driver.restore(manager, step, target)
    # orbax / tensorstore raise many unrelated types on damaged files (see load_env).
    except Exception as e:  # noqa: BLE001
      raise DataError(f"{directory}/{step}: cannot restore ({type(e).__name__}: "
                      f"{one_line(e)})") from None
  return RestoredRun(cfg=cfg, agent=agent, runner=runner, step=int(step), log=log,
                     env_meta=meta)


def restore_policy(workdir: str, step: int | None = None, env: str | None = None):
  """-> (agent, policy params, RestoredRun): the params `agent.act` takes."""
  run = restore_run(workdir, step, env)
  return run.agent, run.agent.policy_params(run.runner.agent), run
