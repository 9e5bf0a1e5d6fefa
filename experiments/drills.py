"""The kill/restart drills behind `python -m experiments.fault_drill` (see that module)."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

# The drills and the job sizes they run at: experiments/drill_list.py.
from experiments.drill_list import (AP, DRILL_LIST, LABEL_K, LABEL_ROWS, LABEL_SHARDS, OFFLINE,
                                    PIPELINE, PRETRAIN, TRAIN, Drill)
from jaxrec import faults
from jaxrec.errors import ConfigError
from jaxrec.io import atomic_write_text, read_jsonl

TIMING = ("steps_per_s", "epoch_s", "label_wait_s", "samples_per_s")


class Runner:
  """Starts the CLIs as subprocesses (the drill's log collects every run's output) and
  signals them when told to."""

  def __init__(self, workdir: str):
    self.env = os.environ | {
        "JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1",
        "JAX_COMPILATION_CACHE_DIR": os.path.join(workdir, "xla_cache"),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.5"}
    self.env.pop(faults.ENV, None)

  def run(self, jobs: list[tuple[str, list[str]]], log_path: str, failpoint: str = "",
          trigger: str = "", delay: float = 0.0, sig: int = signal.SIGKILL) -> dict:
    """Runs the jobs (module, args) concurrently. With `trigger`, once a line matching it
    appears in the log (after these jobs started), waits `delay` seconds and sends `sig` to
    every job still running. -> {"rcs": [...], "signalled": bool, "trigger_s": seconds from
    the start to the trigger (None if it never appeared), "wall_s": ...}."""
    env = self.env | ({faults.ENV: failpoint} if failpoint else {})
    with open(log_path, "ab") as log:
      for module, args in jobs:
        log.write(f"\n$ python -m {module} {' '.join(args)}"
                  f"{f'  [{faults.ENV}={failpoint}]' if failpoint else ''}\n".encode())
      offset = log.tell()
    logs = [open(log_path, "ab") for _ in jobs]
    t0 = time.monotonic()
    procs = [subprocess.Popen([sys.executable, "-m", m, *a], stdout=f, stderr=subprocess.STDOUT,
                              env=env) for (m, a), f in zip(jobs, logs)]
    pattern = re.compile(trigger, re.M) if trigger else None
    fire_at, trigger_s, signalled = None, None, False
    while any(p.poll() is None for p in procs):
      now = time.monotonic()
      if pattern is not None and trigger_s is None:
        with open(log_path, "rb") as f:
          f.seek(offset)
          if pattern.search(f.read().decode(errors="replace")):
            trigger_s = now - t0
            fire_at = now + delay
      if fire_at is not None and now >= fire_at and not signalled:
        for p in procs:
          if p.poll() is None:
            p.send_signal(sig)
        signalled = True
      time.sleep(0.02)
    for f in logs:
      f.close()
    if pattern is not None and trigger_s is None:  # the line and the exit within one poll
      with open(log_path, "rb") as f:
        f.seek(offset)
        if pattern.search(f.read().decode(errors="replace")):
          trigger_s = time.monotonic() - t0
    return {"rcs": [p.returncode for p in procs], "signalled": signalled,
            "trigger_s": trigger_s, "wall_s": time.monotonic() - t0}


def _rows(path: str) -> list[dict]:
  if not os.path.exists(path):
    return []
  return [{k: v for k, v in row.items() if k not in TIMING}
          for row in read_jsonl(path, "run log")]


def _tree_mismatches(a, b) -> int:
  import jax
  import numpy as np
  la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
  if len(la) != len(lb):
    return max(len(la), len(lb))
  return sum(not (np.asarray(x).dtype == np.asarray(y).dtype
                  and np.asarray(x).tobytes() == np.asarray(y).tobytes()) for x, y in zip(la, lb))


# A line each job prints once it has done (and checkpointed) some work: random signals land
# a uniform fraction of the reference run's remaining time after it.
PROGRESS = {"label": r"^labeled \S+: "}
PROGRESS_DEFAULT = r"^epoch 1/"


class Drills:
  def __init__(self, workdir: str, seed: int, max_reruns: int, log=print):
    self.dir = os.path.abspath(workdir)
    self.rng = random.Random(seed)
    self.max_reruns = max_reruns
    self.log = log
    self.runner = Runner(self.dir)
    self.tail: dict[str, float] = {}  # job -> seconds from its progress line to its exit
    os.makedirs(self.dir, exist_ok=True)
    self.env_dir = os.path.join(self.dir, "env")

  # --- shared inputs ------------------------------------------------------------------------
  def build_env(self) -> None:
    if os.path.exists(os.path.join(self.env_dir, "env.json")):
      return
    self.log(f"building the drill env in {self.env_dir}")
    tmp = self.env_dir + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    r = self.runner.run([("experiments.build_envs", [
        "--dataset=synthetic", "--synthetic_users=200", "--synthetic_items=80",
        "--synthetic_genres=4", "--synthetic_mean_length=10", "--seq_steps=100", "--max_len=8",
        f"--out={tmp}"])], os.path.join(self.dir, "build_env.log"))
    if r["rcs"] != [0]:
      raise ConfigError(f"building the drill env failed; see {self.dir}/build_env.log")
    os.replace(tmp, self.env_dir)

  def jobs(self, job: str, workdir: str, workers: int = 1) -> list[tuple[str, list[str]]]:
    if job in TRAIN:
      return [("jaxrec.train", TRAIN[job] + [f"--env={self.env_dir}", f"--workdir={workdir}"])]
    if job == "pretrain":
      return [("jaxrec.pretrain", PRETRAIN + [f"--env={self.env_dir}",
                                              f"--workdir={workdir}"])]
    if job == "ialp_ap":
      return [("jaxrec.train", AP + [f"--env={self.env_dir}", f"--workdir={workdir}",
                                     f"--init_from={self.reference('pretrain')}"])]
    if job == "offline":  # its own synthetic dataset, not the env
      return [("jaxrec.offline", OFFLINE + [f"--workdir={workdir}"])]
    if job == "pipeline":
      return [("jaxrec.pretrain", PIPELINE + [f"--env={self.env_dir}", f"--workdir={workdir}",
                                              f"--labeler_dir={workdir}"]),
              ("llm_labeler.label", [
                  f"--requests={workdir}/requests", f"--out={workdir}/labels",
                  "--backend=oracle", f"--env={self.env_dir}", "--follow",
                  "--poll_seconds=0.05"])]
    if job == "label":
      return [("llm_labeler.label", [
          f"--requests={self.request_dir()}", f"--out={workdir}", "--backend=oracle",
          f"--env={self.env_dir}", f"--num_workers={workers}", f"--worker_id={w}"])
              for w in range(workers)]
    raise KeyError(job)

  def reference(self, job: str) -> str:
    """The uninterrupted run of `job` (kept across program runs); also times the part after
    its progress line, where random signals land."""
    out = os.path.join(self.dir, "reference", job)
    marker = os.path.join(out, "FINISHED.json")
    if os.path.exists(marker):
      with open(marker) as f:
        self.tail.setdefault(job, json.load(f)["tail_s"])
      return out
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    log_path = os.path.join(self.dir, "reference", f"{job}.log")
    r = self.runner.run(self.jobs(job, out), log_path,
                        trigger=PROGRESS.get(job, PROGRESS_DEFAULT), delay=1e9)
    if any(rc != 0 for rc in r["rcs"]) or r["trigger_s"] is None:
      raise ConfigError(f"the reference {job} run failed (exit {r['rcs']}); see {log_path}")
    self.tail[job] = r["wall_s"] - r["trigger_s"]
    atomic_write_text(marker, json.dumps({"wall_s": r["wall_s"], "tail_s": self.tail[job]}))
    self.log(f"reference {job}: {r['wall_s']:.1f}s ({self.tail[job]:.1f}s after its first "
             "progress line)")
    return out

  def request_dir(self) -> str:
    out = os.path.join(self.dir, "requests")
    from jaxrec import shards
    if shards.is_done(out):
      return out
    r = self.runner.run([("jaxrec.sample_requests", [
        f"--env={self.env_dir}", f"--num={LABEL_SHARDS * LABEL_ROWS}", f"--k={LABEL_K}",
        f"--shard_size={LABEL_ROWS}", "--num_sessions=32", f"--out={out}"])],
        os.path.join(self.dir, "requests.log"))
    if r["rcs"] != [0]:
      raise ConfigError(f"sampling the request shards failed; see {self.dir}/requests.log")
    return out

  # --- one drill ----------------------------------------------------------------------------
  def run(self, drill: Drill) -> dict:
    t0 = time.perf_counter()
    ref = self.reference(drill.job)
    out = os.path.join(self.dir, "drills", drill.name)
    log_path = out + ".log"
    result = {"name": drill.name, "kill": drill.kill, "failpoint": drill.failpoint,
              "interruptions": 0, "runs": 0, "problems": []}

    def fresh():
      shutil.rmtree(out, ignore_errors=True)
      if os.path.exists(log_path):
        os.unlink(log_path)
      os.makedirs(os.path.dirname(out), exist_ok=True)

    def attempt(**kw) -> dict:
      result["runs"] += 1
      return self.runner.run(self.jobs(drill.job, out, drill.workers), log_path, **kw)

    fresh()
    rcs: list[int] = []
    if drill.kill == "failpoint":
      rcs = attempt(failpoint=drill.failpoint)["rcs"]
      if -signal.SIGKILL in rcs:
        result["interruptions"] += 1
      else:
        result["problems"].append(f"the job never reached failpoint {drill.failpoint} "
                                  f"(exit {rcs})")
    else:
      sig = signal.SIGTERM if drill.kill == "sigterm" else signal.SIGKILL
      trigger = PROGRESS.get(drill.job, PROGRESS_DEFAULT)
      tries = 0
      while result["interruptions"] < drill.kills and tries < 2 * drill.kills + 2:
        tries += 1
        delay = self.rng.uniform(0.05, 0.9) * self.tail[drill.job]
        r = attempt(trigger=trigger, delay=delay, sig=sig)
        rcs = r["rcs"]
        result.setdefault("signal_delays_s", []).append(round(delay, 3))
        if r["signalled"] and any(rc != 0 for rc in rcs):
          result["interruptions"] += 1
          if drill.kill == "sigterm":
            self._check_sigterm(drill, out, log_path, rcs, result)
        elif result["interruptions"] == 0:
          fresh()  # finished before the signal: start over (nothing was drilled yet)
          result["runs"] = 0
        else:
          break  # the resumed run finished before a second signal: that is fine
      if not result["interruptions"]:
        result["problems"].append("the signal never interrupted the job")
    for _ in range(self.max_reruns):  # the user reruns the same command until it finishes
      if rcs and all(rc == 0 for rc in rcs):
        break
      rcs = attempt()["rcs"]
    if not all(rc == 0 for rc in rcs):
      result["problems"].append(f"still failing after {self.max_reruns} reruns (exit {rcs}); "
                                f"see {log_path}")
    else:
      if drill.job == "label":
        found = self._compare_labels(ref, out, log_path, self.request_dir())
      elif drill.job == "pipeline":
        found = self._compare_runs("pretrain", ref, out)
        labels = self._compare_labels(os.path.join(ref, "labels"), os.path.join(out, "labels"),
                                      log_path, os.path.join(out, "requests"))
        found["problems"] += labels.pop("problems")
        found["resume_mismatches"] += labels.pop("resume_mismatches")
        found |= labels
      else:
        found = self._compare_runs(drill.job, ref, out)
      result["problems"] += found.pop("problems")
      result |= found
    result["passed"] = not result["problems"]
    result["seconds"] = round(time.perf_counter() - t0, 1)
    return result

  def _check_sigterm(self, drill, out, log_path, rcs, result) -> None:
    """SIGTERM: exit 143 after saving (or 0 if the job was already finishing)."""
    for rc in rcs:
      if rc not in (0, faults.PREEMPTED_EXIT, -signal.SIGTERM):
        result["problems"].append(f"SIGTERM: exit status {rc}, expected "
                                  f"{faults.PREEMPTED_EXIT} (or 0 when finishing, -15 during "
                                  "start-up)")
    if faults.PREEMPTED_EXIT not in rcs:
      return
    text = open(log_path, errors="replace").read()
    if "preempted: " not in text:
      result["problems"].append("SIGTERM: no 'preempted:' line in the log")
    if drill.job == "label":
      return
    from jaxrec.checkpoint import latest_step
    m = re.findall(r"stopped after (?:pre-training )?epoch (\d+)", text)
    step = latest_step(out)  # the driver's layout, the same for every job
    if not m or step != int(m[-1]):
      result["problems"].append(f"SIGTERM: the message names epoch {m[-1:]} but the latest "
                                f"checkpoint is {step}")
    result["preempted_after_epoch"] = step

  def _compare_runs(self, job: str, ref: str, out: str) -> dict:
    mismatches, problems = 0, []
    for fn in ("metrics.jsonl", "curve.jsonl"):
      a, b = _rows(os.path.join(ref, fn)), _rows(os.path.join(out, fn))
      if job == "pretrain" and fn == "curve.jsonl":
        continue
      bad = sum(x != y for x, y in zip(a, b)) + abs(len(a) - len(b))
      if bad:
        problems.append(f"{fn}: {bad} rows differ from the uninterrupted run")
      mismatches += bad
    if job == "offline":
      a, b = _results(ref), _results(out)
      if a != b:
        problems.append("results.json differs from the uninterrupted run")
        mismatches += 1
      (step_a, a), (step_b, b) = _offline_state(ref), _offline_state(out)
      leaves = _tree_mismatches(a, b) + (step_a != step_b)
      what = "offline state arrays (both copies' params, Adam states, update count)"
    elif job == "pretrain":
      from jaxrec.train.policy import load_policy
      net = _pretrain_net(ref)
      leaves = _tree_mismatches(load_policy(ref, net), load_policy(out, net))
      what = "pre-trained policy params"
    else:
      from jaxrec.checkpoint import restore_run
      a, b = restore_run(ref), restore_run(out)
      leaves = _tree_mismatches(a.runner, b.runner) + (a.step != b.step)
      what = "loop-state arrays (params, optimizer, buffer, env, key)"
    if leaves:
      problems.append(f"{leaves} {what} differ from the uninterrupted run")
    return {"resume_mismatches": mismatches + leaves, "problems": problems}

  def _compare_labels(self, ref: str, out: str, log_path: str, req_dir: str) -> dict:
    import numpy as np
    from jaxrec import shards
    problems = []
    requests = shards.read_manifest(req_dir)["shards"]
    try:
      labeled = shards.list_shards(out, verify=True)
    except Exception as e:  # a drill reports every failure, it does not stop on one
      problems.append(f"labels do not verify: {e}")
      labeled = []
    lost = sum(requests[n]["rows"] for n in requests if n not in labeled)
    commits: dict[str, int] = {}
    for name in re.findall(r"^labeled (\S+): ", open(log_path, errors="replace").read(), re.M):
      commits[name] = commits.get(name, 0) + 1
    duplicates = sum(c - 1 for c in commits.values() if c > 1)
    duplicates += sum(1 for n in labeled if n not in requests)  # labels of no request
    mismatches = 0
    for name in labeled:
      if name in requests:
        a, b = shards.read_labels(ref, name), shards.read_labels(out, name)
        mismatches += int(not (np.array_equal(a.choice, b.choice)
                               and np.array_equal(a.valid, b.valid)))
    try:
      with open(os.path.join(out, shards.MANIFEST)) as f:
        on_disk = sorted(json.load(f)["shards"])
    except (OSError, ValueError, KeyError):
      on_disk = None
    if on_disk != labeled:
      problems.append(f"manifest.json lists {on_disk}, the verified shards are {labeled}")
    temps = sorted(fn for fn in os.listdir(out) if fn.startswith(".tmp-"))
    if temps:
      problems.append(f"temporary files left behind: {temps}")
    if lost:
      problems.append(f"{lost} request rows have no label")
    if duplicates:
      problems.append(f"{duplicates} label shards were committed more than once")
    if mismatches:
      problems.append(f"{mismatches} label shards differ from the uninterrupted run")
    return {"lost_labels": lost, "duplicate_labels": duplicates,
            "resume_mismatches": mismatches, "label_shards": len(labeled),
            "temp_files": len(temps), "problems": problems}


def _results(run_dir: str) -> dict | None:
  path = os.path.join(run_dir, "results.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def _offline_state(run_dir: str):
  """(latest epoch, the jaxrec.offline checkpoint's state tree as saved): restored without a
  target, so nothing has to rebuild the learner's structure."""
  from jaxrec.train import driver
  manager = driver.checkpoint_manager(run_dir)
  try:
    step = manager.latest_step()
    state, _ = driver.restore(manager, step, None)
  finally:
    manager.close()
  return step, state


def _pretrain_net(run_dir: str):
  from jaxrec.nets.networks import NetConfig
  with open(os.path.join(run_dir, "policy", "policy.json")) as f:
    return NetConfig.from_dict(json.load(f)["net"])


def run_drills(workdir: str, names: list[str], seed: int = 0, max_reruns: int = 4,
               log=print) -> dict:
  known = {d.name: d for d in DRILL_LIST}
  unknown = [n for n in names if n not in known]
  if unknown:
    raise ConfigError(f"--drills: unknown {unknown}; see --list")
  chosen = [known[n] for n in names] if names else list(DRILL_LIST)
  t0 = time.perf_counter()
  drills = Drills(workdir, seed, max_reruns, log)
  drills.build_env()
  results = []
  for d in chosen:
    try:
      r = drills.run(d)
    except Exception as e:  # a drill that cannot run is a failed drill, not a lost summary
      r = {"name": d.name, "kill": d.kill, "failpoint": d.failpoint, "interruptions": 0,
           "runs": 0, "passed": False, "seconds": 0.0,
           "problems": [f"the drill raised {type(e).__name__}: {e}"]}
    log(f"{d.name}: {'passed' if r['passed'] else 'FAILED'} in {r['seconds']}s "
        f"({r['runs']} runs){'' if r['passed'] else ': ' + '; '.join(r['problems'])}")
    results.append(r)
  summary = {"drills": len(results), "passed": sum(r["passed"] for r in results),
             "lost_labels": sum(r.get("lost_labels", 0) for r in results),
             "duplicate_labels": sum(r.get("duplicate_labels", 0) for r in results),
             "resume_mismatches": sum(r.get("resume_mismatches", 0) for r in results),
             "seconds": round(time.perf_counter() - t0, 1), "results": results}
  atomic_write_text(os.path.join(drills.dir, "fault_drill.json"),
                    json.dumps(summary, indent=1) + "\n")
  return summary
