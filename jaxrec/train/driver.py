"""The run driver: one run directory's lifecycle, written once for every training job.

Online training (`jaxrec.train.run`) and iALP pre-training (`jaxrec.train.pretraining`) are
wirings of `run_epochs`: they build their state and their jitted epoch, and the driver owns
everything around it.

Run directory:
  flags.json      the job's config (written only after the config validated)
  metrics.jsonl   one row per evaluation (epoch 0 = before any update), and any other
                  per-epoch logs the job keeps (e.g. curve.jsonl, one row per update)
  checkpoints/    orbax CheckpointManager, one step per epoch, two items: "state" (the job's
                  whole loop state, restored onto the job's shardings) and "log" (every log's
                  rows so far). A rerun of the same command resumes from the latest step and
                  ends exactly as an uninterrupted run.

Per epoch: the job's epoch function, the NaN / inf guard (a non-finite epoch is never saved:
the run stops with the last good checkpoint in place), the evaluation, the checkpoint, the
logs (atomic rewrites) and one progress line with the ETA. SIGTERM (`jaxrec.faults`): the epoch
in flight finishes and is saved, then `Preempted`; the CLIs exit 143.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Callable

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxrec import faults
from jaxrec.errors import NonFiniteError
from jaxrec.io import atomic_write_jsonl, atomic_write_text

CHECKPOINT_DIR = "checkpoints"
ITEMS = ("state", "log")  # the orbax layout of every run directory


@dataclasses.dataclass(frozen=True)
class Epoch:
  """What a job's epoch function returns beside the new state.

  stats: scalars added to the epoch's metrics row (after the evaluation's).
  logs: rows appended to the job's other logs this epoch, by log name.
  nonfinite: None, or where the epoch produced NaN / inf ("at env step 512 (update 3 of
    epoch 2)"): the driver stops before saving it.
  """
  stats: dict
  logs: dict = dataclasses.field(default_factory=dict)
  nonfinite: str | None = None


@dataclasses.dataclass(frozen=True)
class Job:
  """The fixed facts of one run.

  name: "train" | "pretrain" | "offline": its failpoints are NAME.saving / NAME.saved
    (jaxrec.faults.POINTS).
  config: the validated config, written to flags.json.
  logs: the per-epoch logs besides metrics (each LOG.jsonl).
  counter: the metrics row's second key ("env_steps", "updates") and its value at an epoch.
  timing: the epoch's wall seconds -> scalars for its row (e.g. {"steps_per_s": ...}).
  """
  name: str
  workdir: str
  config: Any
  num_epochs: int
  keep_checkpoints: int
  counter: str
  count: Callable[[Any, int], int]
  timing: Callable[[float], dict]
  logs: tuple[str, ...] = ()
  primary: bool = True
  noun: str = "epoch"  # how the SIGTERM message names an epoch ("pre-training epoch")


def scalars(tree: dict) -> dict:
  """{name: array scalar} -> {name: float} (device values fetched)."""
  return {k: float(np.asarray(v)) for k, v in tree.items()}


def write_config(workdir: str, config, primary: bool = True) -> None:
  """flags.json of a run directory (the dataclass config as JSON)."""
  os.makedirs(workdir, exist_ok=True)
  if primary:
    atomic_write_text(os.path.join(workdir, "flags.json"),
                      json.dumps(dataclasses.asdict(config), indent=2) + "\n")


def checkpoint_manager(workdir: str, keep: int | None = None) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=keep) if keep else None
  return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, CHECKPOINT_DIR)),
                               options=options, item_names=ITEMS)


def restore(manager: ocp.CheckpointManager, step: int, abstract_state):
  """-> (state, log dict) of checkpoint `step`; abstract_state: shapes, dtypes, shardings."""
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state), log=ocp.args.JsonRestore()))
  return restored.state, dict(restored.log)


def run_epochs(job: Job, state, abstract_state, *,
               epoch_fn: Callable[[Any, int], tuple[Any, Epoch]],
               evaluate_fn: Callable[[Any, int], dict],
               progress: Callable[[dict], tuple[str, str]], log=print) -> tuple[Any, dict]:
  """Runs epochs 1..job.num_epochs from the latest checkpoint (or evaluates epoch 0 first).

  Args:
    job: the run's facts.
    state: the freshly initialised loop state (used when there is no checkpoint).
    abstract_state: its jax.ShapeDtypeStruct tree with shardings (the restore target).
    epoch_fn: (state, epoch) -> (new state, Epoch); the state is not kept if nonfinite.
    evaluate_fn: (state, epoch) -> {metric: float} of the test-env evaluation.
    progress: a metrics row -> (head, tail) of its log line "epoch E/N: head, ETA Ts | tail"
      (epoch 0: "epoch 0: tail").
    log: where progress lines go (only the primary process logs).
  Returns:
    (the final state, {"metrics": rows, LOG: rows, ...}).
  """
  log = log if job.primary else (lambda s: None)
  write_config(job.workdir, job.config, job.primary)
  names = ("metrics",) + tuple(job.logs)
  manager = checkpoint_manager(job.workdir, job.keep_checkpoints)
  start = manager.latest_step()
  if start is not None:
    state, logs = restore(manager, start, abstract_state)
    logs = {n: list(logs.get(n, [])) for n in names}
    log(f"resumed from epoch {start} ({job.counter} {job.count(state, start)})")
  else:
    start = 0
    row = {"epoch": 0, job.counter: 0} | evaluate_fn(state, 0)
    logs = {n: [] for n in names}
    logs["metrics"].append(row)
    log(f"epoch 0: {progress(row)[1]}")

  def write_logs():
    if job.primary:
      for n in names:
        atomic_write_jsonl(os.path.join(job.workdir, f"{n}.jsonl"), logs[n])

  t_start = time.perf_counter()
  with faults.Preemption() as preemption:
    try:
      for epoch in range(start + 1, job.num_epochs + 1):
        t0 = time.perf_counter()
        new_state, out = epoch_fn(state, epoch)
        jax.block_until_ready(new_state)
        dt = time.perf_counter() - t0
        if out.nonfinite is not None:
          raise NonFiniteError(f"{job.workdir}: NaN or inf in the loss or parameters "
                               f"{out.nonfinite}; stopped before saving it, the last good "
                               f"checkpoint is epoch {epoch - 1}")
        state = new_state
        row = ({"epoch": epoch, job.counter: job.count(state, epoch)}
               | evaluate_fn(state, epoch) | out.stats | job.timing(dt))
        logs["metrics"].append(row)
        for n, rows in out.logs.items():
          logs[n].extend(rows)
        manager.save(epoch, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                    log=ocp.args.JsonSave(logs)))
        faults.failpoint(f"{job.name}.saving")
        manager.wait_until_finished()
        faults.failpoint(f"{job.name}.saved")
        write_logs()
        eta = (time.perf_counter() - t_start) / (epoch - start) * (job.num_epochs - epoch)
        head, tail = progress(row)
        log(f"epoch {epoch}/{job.num_epochs}: {head}, ETA {eta:.0f}s | {tail}")
        if preemption.requested and epoch < job.num_epochs:
          raise faults.Preempted(f"{job.workdir}: stopped after {job.noun} {epoch} of "
                                 f"{job.num_epochs}, its checkpoint is saved; rerun the same "
                                 "command to resume")
    finally:
      manager.close()
    write_logs()
  return state, logs


def scan_epoch(train_epoch, data, root_key, updates_per_epoch: int):
  """-> epoch_fn(state, epoch) for run_epochs over a jitted `train_epoch(state, data, key)` that
  returns per-update points (one of them FINITE): the epoch's mean of each point, and where the
  first non-finite update fell (the offline and batch-RL loops)."""
  from jaxrec.train.loop import FINITE

  def epoch_fn(state, epoch):
    new_state, points = train_epoch(state, data, jax.random.fold_in(root_key, epoch))
    points = jax.tree_util.tree_map(np.asarray, jax.device_get(points))
    ok = points.pop(FINITE)
    where = None
    if not ok.all():
      i = int(np.argmin(ok))
      where = (f"at update {(epoch - 1) * updates_per_epoch + i + 1} (update {i + 1} of epoch "
               f"{epoch})")
    return new_state, Epoch(stats={k: float(v.mean()) for k, v in points.items()},
                            nonfinite=where)

  return epoch_fn
