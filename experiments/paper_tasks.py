"""The task runner of experiments.paper: resumable pre-training / training runs, executed in
order in this process or in a pool of worker processes (spawned: jax is not fork-safe) that
share a persistent XLA compilation cache. Kept apart from the CLI module so that workers
unpickle `execute` and `Task` without re-running a `__main__`."""

from __future__ import annotations

import concurrent.futures as cf
import json
import multiprocessing
import os
import resource
import time
from typing import NamedTuple

from jaxrec.errors import DataError
from jaxrec.faults import Forwarding, Preempted
from jaxrec.io import atomic_write_text


class Task(NamedTuple):
  """One resumable unit of work: a pre-training or a training run."""
  label: str  # "A2C seed 1", "pretrain shared", "explore A2C greedy seed 0"
  kind: str  # pretrain | train
  workdir: str
  cfg: object  # PretrainConfig | TrainConfig
  needs: str = ""  # a pretrain workdir that must be finished first ("" = none)
  method: str = ""  # train: the results.json name (DQN, ..., LLMOnline)
  seed: int = 0
  explore: bool = False  # train: an extra run of the exploration-strategy comparison


DONE = "done.json"


def is_done(workdir: str) -> bool:
  return os.path.isfile(os.path.join(workdir, DONE))


# Where a task's time goes: jax reports tracing, lowering and XLA compilation (a persistent
# cache hit counts as compilation: it is the load) through jax.monitoring.
_EVENTS = {"/jax/core/compile/jaxpr_trace_duration": "trace_s",
           "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower_s",
           "/jax/core/compile/backend_compile_duration": "compile_s"}
_totals = dict.fromkeys(_EVENTS.values(), 0.0)
_listening = []


def _listen(event: str, duration: float, **kwargs) -> None:
  del kwargs
  if event in _EVENTS:
    _totals[_EVENTS[event]] += duration


def _cpu_s() -> float:
  r = resource.getrusage(resource.RUSAGE_SELF)
  return r.ru_utime + r.ru_stime


def setup_compile_cache(directory: str) -> None:
  """A persistent XLA cache: the same program (another seed, another process) compiles once."""
  import jax
  if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    return  # the user's own cache wins
  jax.config.update("jax_compilation_cache_dir", os.path.abspath(directory))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)


def execute(task: Task, cache_dir: str) -> dict:
  """Runs (or resumes) one task and marks it done; returns (and writes to done.json) its wall
  and CPU seconds and the wall seconds it spent tracing, lowering and compiling."""
  import jax
  from jaxrec.train.pretraining import pretrain
  from jaxrec.train.run import train_and_evaluate
  setup_compile_cache(cache_dir)
  if not _listening:
    jax.monitoring.register_event_duration_secs_listener(_listen)
    _listening.append(True)
  before, cpu0, t0 = dict(_totals), _cpu_s(), time.perf_counter()
  log = lambda s: print(f"  [{task.label}] {s}", flush=True)
  if task.kind == "pretrain":
    pretrain(task.cfg, task.workdir, log=log)
  else:
    train_and_evaluate(task.cfg, task.workdir, log=log)
  times = {"wall_s": time.perf_counter() - t0, "cpu_s": _cpu_s() - cpu0} | {
      k: v - before[k] for k, v in _totals.items()}
  atomic_write_text(os.path.join(task.workdir, DONE),
                    json.dumps({"label": task.label} | times) + "\n")
  return times


class Progress:
  """Progress lines with an ETA from the mean wall time of the tasks finished so far."""

  def __init__(self, tasks: list[Task], workers: int, log):
    self.total, self.workers, self.log = len(tasks), workers, log
    self.walls: dict[str, list[float]] = {"pretrain": [], "train": []}
    self.left = {"pretrain": sum(t.kind == "pretrain" for t in tasks),
                 "train": sum(t.kind == "train" for t in tasks)}
    self.t0 = time.perf_counter()

  def done(self, task: Task, times: dict) -> None:
    wall = times["wall_s"]
    self.walls[task.kind].append(wall)
    self.left[task.kind] -= 1
    finished = sum(len(w) for w in self.walls.values())
    runs = self.walls["train"] or [wall]
    est = {k: (sum(v) / len(v) if v else sum(runs) / len(runs)) for k, v in self.walls.items()}
    eta = sum(est[k] * n for k, n in self.left.items()) / self.workers
    self.log(f"[{finished}/{self.total}] {task.label} done in {wall:.1f}s (compiling "
             f"{times['compile_s']:.1f}s of it; cpu {times['cpu_s']:.1f}s) | elapsed "
             f"{time.perf_counter() - self.t0:.0f}s, ETA {eta:.0f}s")


def live_workers(pool: cf.ProcessPoolExecutor) -> list[int]:
  """Pids of the pool's live worker processes (the executor has no public handle on them)."""
  return [p.pid for p in list((pool._processes or {}).values()) if p.is_alive()]


def run_tasks(tasks: list[Task], workers: int, cache_dir: str, log,
              fn=None) -> dict[str, dict]:
  """Runs the unfinished tasks (a pretrain before the runs that start from it); returns the
  times of each task run now. `fn(task, cache_dir)` runs one task (default `execute`; a test
  passes its own).

  SIGTERM: in this process a run stops at its own next checkpoint (the driver's handler). With
  worker processes the signal is passed on to every worker (a run in flight saves its epoch and
  stops; a worker between runs just exits), no further task starts, and once the workers are
  done this raises Preempted, so the launcher exits 143 with nothing left running (before, the
  workers outlived it and a rerun could train the same run directory twice at once)."""
  fn = fn or execute
  pending = [t for t in tasks if not is_done(t.workdir)]
  if len(pending) < len(tasks):
    log(f"{len(tasks) - len(pending)} of {len(tasks)} tasks already finished (skipped)")
  progress, times = Progress(pending, workers, log), {}
  if workers <= 1 or len(pending) <= 1:
    for t in pending:
      times[t.label] = fn(t, cache_dir)
      progress.done(t, times[t.label])
    return times
  ctx = multiprocessing.get_context("spawn")  # jax is not fork-safe
  with cf.ProcessPoolExecutor(workers, mp_context=ctx) as pool, Forwarding(
      lambda: live_workers(pool)) as forwarding:
    running: dict[cf.Future, Task] = {}
    while (pending and not forwarding.requested) or running:
      # Keep `workers` tasks in flight, in plan order, each whose pretrain has finished.
      for t in list(pending):
        if len(running) >= workers or forwarding.requested:
          break
        if not t.needs or is_done(t.needs):
          running[pool.submit(fn, t, cache_dir)] = t
          pending.remove(t)
      if not running:
        if forwarding.requested:
          break
        raise DataError(f"{pending[0].label}: its pre-training {pending[0].needs} is not "
                        "planned in this run")
      finished, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
      for fut in finished:
        t = running.pop(fut)
        try:
          times[t.label] = fut.result()
        except BaseException:
          if forwarding.requested:  # stopped by the signal (Preempted) or killed between runs
            continue
          for f in running:
            f.cancel()
          raise
        progress.done(t, times[t.label])
  if forwarding.requested:
    raise Preempted(f"runs: stopped by SIGTERM with {len(pending)} not started and the runs "
                    "in flight saved at their last epoch; rerun the same command to resume")
  return times
