"""python -m experiments.offline_table --workdir=DIR [--dataset=NAME --data_dir=PATH
    --true_matrix=FILE | --env=ENV] [--seeds=3 --methods=bcq,cql,crr,sqn,dorl,dqn,pg,a2c
    --batch_epochs=30 --online_epochs=100 --jobs=2]

The batch-RL table of EasyRL4Rec / DORL (BiLLP paper 004, Table 3) on one peer-protocol env:
every method trained --seeds times and evaluated in the env's true env (the ground-truth
matrix) in FB, NX_0 and NX_10, each number the mean of the last quarter of its run's epochs
(the peer's convention: its tables average the last 25 of 100 epochs).

Methods (each one run is one CLI call, so a run here is exactly what a user gets by hand):
  bcq, cql, crr, sqn   python -m jaxrec.batchrl --agent=A: learn from the logged data only
                       (--batch_epochs x --batch_updates_per_epoch updates of 64; the peer's
                       Coat.sh: 100 x 1,000; sqn with its --which_head shead)
  dorl                 python -m jaxrec.train --config=dorl: A2C in the fitted user model with
                       DORL's variance penalty and entropy bonus (needs the env's DORL
                       statistics: the env this program builds has them)
  dqn, pg, a2c         python -m jaxrec.train --config=easyrl4rec_dqn | easyrl4rec_pg |
                       easyrl4rec: online in the fitted user model (the peer's "online RL with
                       user model" rows)
--online_epochs scales the online presets' budgets (their 100 epochs; each epoch is the
preset's steps_per_epoch).

The CPU-sized default: the dataset is the synthetic generator at Coat's size (290 users x 300
items, its ground truth the generator's expected ratings), the batch learners run 30 of the
peer's 100 epochs, the online ones the peer's whole budgets; --jobs runs at once (one per core).

WORKDIR:
  offline_table.json   the flags (a rerun with other shaping flags is refused)
  env/                 the env, unless --env (experiments.build_envs --protocol=peer
                       --dorl_ensemble=N)
  runs/M/seedS/        each run's directory (its CLI's: flags.json, metrics.jsonl,
                       checkpoints/); runs/M/seedS.log its output
  results.json         methods.<name>.<mode>.{R, Len, Ravg} lists over seeds (last quarter),
                       plus per run: R@0, the last epoch, wall time, throughput; the uniformly
                       random policy from the batch runs' own evaluations; the peer's
                       published Coat FB row
  tables.md            mean ± std per mode, beside the peer's Coat numbers
  curves.png           test FB R over the share of each budget, mean ± std over seeds

Rerunning the same command resumes: a finished run is not started again, an unfinished one
resumes from its checkpoint (its CLI's rule). SIGTERM stops the running children (each saves
and exits 143) and then this program with 143.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
from absl import flags

from jaxrec import cli, config
from jaxrec.config import option
from jaxrec.errors import ConfigError, DataError
from jaxrec.faults import PREEMPTED_EXIT, Preempted
from jaxrec.io import atomic_write_text, read_json_object
from jaxrec.batchrl.run import last_quarter
from jaxrec.train.evaluation import eval_modes
from jaxrec.train.presets import PRESETS

# name -> (module, its method flag). The order is the table's.
METHODS = {
    "bcq": ("jaxrec.batchrl", "--agent=bcq"),
    "cql": ("jaxrec.batchrl", "--agent=cql"),
    "crr": ("jaxrec.batchrl", "--agent=crr"),
    "sqn": ("jaxrec.batchrl", "--agent=sqn"),
    "dorl": ("jaxrec.train", "--config=dorl"),
    "dqn": ("jaxrec.train", "--config=easyrl4rec_dqn"),
    "pg": ("jaxrec.train", "--config=easyrl4rec_pg"),
    "a2c": ("jaxrec.train", "--config=easyrl4rec"),
}
# EasyRL4Rec's published Coat table, FB mode, R / Len (its README; BiLLP's Table 3 repeats it).
PEER_COAT_FB = {"bcq": (9.56, 4.06), "cql": (23.35, 10.28), "crr": (28.96, 13.00),
                "sqn": (26.60, 11.51), "dqn": (54.35, 22.02), "pg": (79.34, 29.84),
                "a2c": (81.80, 29.92), "dorl": (76.99, 29.58)}
# Rough cost order on the 2-core host (measured runs, docs/batchrl.md, docs/protocol.md): the
# longest start first, so the last wave is short.
COST_ORDER = ("cql", "dorl", "a2c", "pg", "crr", "bcq", "sqn", "dqn")
# offline_table.json keys a rerun must repeat: they shape every number in the workdir.
SHAPING = ("env", "dataset", "data_dir", "true_matrix", "synthetic_users", "synthetic_items",
           "dorl_ensemble", "batch_epochs", "batch_updates_per_epoch", "online_epochs",
           "eval_sessions", "eval_mode")
MEASURES = ("R", "Len", "Ravg")


@dataclasses.dataclass(frozen=True)
class TableConfig:
  """The program's options (flags)."""
  env: str = option("", "an existing peer-protocol env directory (built with --dorl_ensemble "
                    "if dorl is run); default: WORKDIR/env built from --dataset")
  dataset: str = option("synthetic", "dataset of the env to build (jaxrec.data.registry)")
  data_dir: str = option("", "the dataset's raw files (kuairec: small_matrix.csv there is the "
                         "true matrix)")
  true_matrix: str = option("", "dense user x item ratings for the true env (Coat's completed "
                            "matrix: whitespace text or .npy); synthetic: the generator's")
  synthetic_users: int = option(290, "synthetic: users (Coat's 290)")
  synthetic_items: int = option(300, "synthetic: items (Coat's 300)")
  dorl_ensemble: int = option(5, "DeepFMs of the DORL statistics in the built env "
                              "(DORL-codes --n_models 5)")
  methods: tuple[str, ...] = option(tuple(METHODS), "methods, comma-separated")
  seeds: int = option(3, "seeds per method (0..N-1)")
  batch_epochs: int = option(30, "epochs of the batch learners (the peer's Coat.sh: 100)")
  batch_updates_per_epoch: int = option(1000, "updates per epoch of the batch learners "
                                        "(Coat.sh --step-per-epoch 1000)")
  online_epochs: int = option(100, "epochs of the online presets (theirs: 100), each the "
                              "preset's steps_per_epoch")
  eval_sessions: int = option(100, "true-env episodes per evaluation and mode (--test-num "
                              "100)")
  eval_mode: str = option("FB,NX_0,NX_10", "evaluation modes; the first is the table's main "
                          "one")
  jobs: int = option(2, "runs at once (one per core)")
  workdir: str = ""

  def validate(self) -> None:
    if not self.workdir:
      raise ConfigError("--workdir is required")
    bad = [m for m in self.methods if m not in METHODS]
    if bad or not self.methods:
      raise ConfigError(f"--methods must be a non-empty list of {', '.join(METHODS)}; got "
                        f"{','.join(self.methods)}")
    for f in ("seeds", "batch_epochs", "batch_updates_per_epoch", "online_epochs",
              "eval_sessions", "jobs", "synthetic_users", "synthetic_items"):
      if getattr(self, f) <= 0:
        raise ConfigError(f"--{f} must be positive, got {getattr(self, f)}")
    if self.dorl_ensemble < 2:
      raise ConfigError(f"--dorl_ensemble must be at least 2 (a variance), got "
                        f"{self.dorl_ensemble}")
    eval_modes(self.eval_mode)
    if self.env and (self.data_dir or self.true_matrix or self.dataset != "synthetic"):
      raise ConfigError("--env is an existing env directory; --dataset, --data_dir and "
                        "--true_matrix apply when this program builds WORKDIR/env")
    if self.env:
      check_env(self.env, "dorl" in self.methods)

  def epochs_of(self, method: str) -> int:
    return self.batch_epochs if METHODS[method][0] == "jaxrec.batchrl" else self.online_epochs


def check_env(env: str, dorl: bool) -> None:
  """A peer-protocol env directory (with DORL's statistics when dorl runs): else one line."""
  path = os.path.join(env, "env.json")
  if not os.path.isfile(path):
    raise DataError(f"--env={env}: not an env directory (no env.json)")
  meta = read_json_object(path)
  if meta.get("protocol") != "peer":
    raise DataError(f"--env={env}: a {meta.get('protocol')!r}-protocol env; the table needs "
                    "one built with experiments.build_envs --protocol=peer")
  if dorl and not os.path.isfile(os.path.join(env, "dorl", "dorl.json")):
    raise DataError(f"--env={env}: no DORL statistics (dorl/dorl.json); build it with "
                    "--dorl_ensemble=N or leave dorl out of --methods")


def run_dir(workdir: str, method: str, seed: int) -> str:
  return os.path.join(workdir, "runs", method, f"seed{seed}")


def command(cfg: TableConfig, env: str, method: str, seed: int) -> list[str]:
  """The CLI call of one run."""
  module, flag = METHODS[method]
  common = [f"--env={env}", f"--workdir={run_dir(cfg.workdir, method, seed)}",
            f"--seed={seed}", f"--eval_sessions={cfg.eval_sessions}",
            f"--eval_mode={cfg.eval_mode}"]
  if module == "jaxrec.batchrl":
    budget = [f"--epochs={cfg.batch_epochs}",
              f"--updates_per_epoch={cfg.batch_updates_per_epoch}"]
  else:
    per_epoch = PRESETS[flag.split("=")[1]][1]["steps_per_epoch"][0]
    budget = [f"--total_steps={cfg.online_epochs * per_epoch}",
              f"--steps_per_epoch={per_epoch}"]
  return [sys.executable, "-m", module, flag, *budget, *common]


def read_rows(run: str) -> list[dict]:
  path = os.path.join(run, "metrics.jsonl")
  if not os.path.isfile(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def finished(run: str, epochs: int) -> bool:
  rows = read_rows(run)
  return bool(rows) and rows[-1]["epoch"] == epochs


def build_env(cfg: TableConfig, log) -> str:
  """WORKDIR/env (or --env): built once, through experiments.build_envs, atomically."""
  if cfg.env:
    return cfg.env
  env = os.path.join(cfg.workdir, "env")
  if os.path.isfile(os.path.join(env, "env.json")):
    return env
  tmp = env + ".tmp"
  shutil.rmtree(tmp, ignore_errors=True)
  cmd = [sys.executable, "-m", "experiments.build_envs", "--protocol=peer",
         f"--dataset={cfg.dataset}", f"--out={tmp}"]
  if "dorl" in cfg.methods:
    cmd.append(f"--dorl_ensemble={cfg.dorl_ensemble}")
  if cfg.dataset == "synthetic":
    cmd += [f"--synthetic_users={cfg.synthetic_users}",
            f"--synthetic_items={cfg.synthetic_items}"]
  cmd += [f"--data_dir={cfg.data_dir}"] * bool(cfg.data_dir)
  cmd += [f"--true_matrix={cfg.true_matrix}"] * bool(cfg.true_matrix)
  log(f"env: building {env} ({' '.join(cmd[2:])})")
  res = subprocess.run(cmd, capture_output=True, text=True, check=False)
  if res.returncode:
    shutil.rmtree(tmp, ignore_errors=True)
    tail = (res.stderr.strip().splitlines() or ["(no output)"])[-1]
    raise DataError(f"building {env} failed: {tail}")
  os.replace(tmp, env)
  return env


class Runner:
  """Runs the CLI calls --jobs at a time; SIGTERM is passed to the running children and no new
  one starts."""

  def __init__(self, jobs: int):
    self.jobs = jobs
    self.lock = threading.Lock()
    self.procs: set[subprocess.Popen] = set()
    self.stopping = False

  def on_sigterm(self, signum, frame):
    del signum, frame
    with self.lock:
      self.stopping = True
      for p in self.procs:
        p.send_signal(signal.SIGTERM)

  def one(self, name: str, cmd: list[str], logfile: str) -> tuple[str, int, float]:
    with self.lock:
      if self.stopping:
        return name, PREEMPTED_EXIT, 0.0
      os.makedirs(os.path.dirname(logfile), exist_ok=True)
      out = open(logfile, "a")
      out.write(f"$ {' '.join(cmd)}\n")
      out.flush()
      t0 = time.time()
      p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
      self.procs.add(p)
    rc = p.wait()
    with self.lock:
      self.procs.discard(p)
      out.close()
    return name, rc, time.time() - t0

  def run_all(self, tasks: list[tuple[str, list[str], str]], on_done) -> list[str]:
    """tasks: (name, command, log file); on_done(name, wall_s) after each success. Returns the
    failures' one-line descriptions."""
    failures = []
    previous = signal.signal(signal.SIGTERM, self.on_sigterm)
    try:
      with concurrent.futures.ThreadPoolExecutor(self.jobs) as pool:
        futures = [pool.submit(self.one, *t) for t in tasks]
        for fut in concurrent.futures.as_completed(futures):
          name, rc, wall = fut.result()
          if rc == 0:
            on_done(name, wall)
          elif not (self.stopping and rc in (PREEMPTED_EXIT, -signal.SIGTERM)):
            failures.append(f"{name} exited {rc}")
    finally:
      signal.signal(signal.SIGTERM, previous)
    return failures


def _rate(rows: list[dict]) -> tuple[str, float] | None:
  for key in ("updates_per_s", "steps_per_s"):
    vals = [r[key] for r in rows if key in r]
    if vals:
      return key, float(np.median(vals))
  return None


def collect(cfg: TableConfig, env: str, walls: dict) -> dict:
  """results.json's content from the finished runs (each method: the seeds finished so far,
  in seed order)."""
  modes = eval_modes(cfg.eval_mode)
  methods, runs, random = {}, {}, {m: {k: [] for k in MEASURES} for m in modes}
  for method in cfg.methods:
    per_mode = {m: {k: [] for k in MEASURES} for m in modes}
    seeds = []
    for seed in range(cfg.seeds):
      d = run_dir(cfg.workdir, method, seed)
      if not finished(d, cfg.epochs_of(method)):
        continue
      rows = read_rows(d)
      seeds.append(seed)
      for i, mode in enumerate(modes):
        prefix = "" if i == 0 else f"{mode}_"
        for k in MEASURES:
          per_mode[mode][k].append(last_quarter(rows, prefix + k))
      rate = _rate(rows)
      runs[f"{method}/seed{seed}"] = {
          "R@0": rows[0]["R"], "Len@0": rows[0]["Len"], "last_R": rows[-1]["R"],
          "epochs": rows[-1]["epoch"], "wall_s": walls.get(f"{method}/seed{seed}"),
          "rate": None if rate is None else {rate[0]: rate[1]}}
    if seeds:
      methods[method] = per_mode | {"seeds": seeds}
  for seed in range(cfg.seeds):  # each batch run evaluates a random policy on its own key
    for method in cfg.methods:
      path = os.path.join(run_dir(cfg.workdir, method, seed), "results.json")
      if METHODS[method][0] == "jaxrec.batchrl" and f"{method}/seed{seed}" in runs and (
          os.path.isfile(path)):
        res = read_json_object(path)["modes"]
        for mode in modes:
          for k in MEASURES:
            random[mode][k].append(res[mode]["random"][k])
        break
  return {"env": os.path.abspath(env), "dataset": read_json_object(
              os.path.join(env, "env.json")).get("dataset"),
          "modes": list(modes), "seeds": cfg.seeds,
          "budget": {"batch_epochs": cfg.batch_epochs,
                     "batch_updates_per_epoch": cfg.batch_updates_per_epoch,
                     "online_epochs": cfg.online_epochs, "eval_sessions": cfg.eval_sessions},
          "last_quarter": "the mean over the last max(1, epochs // 4) epochs of each run",
          "methods": methods, "random": random if random[modes[0]]["R"] else None,
          "runs": runs, "peer_coat_FB": {m: {"R": r, "Len": n}
                                         for m, (r, n) in PEER_COAT_FB.items()}}


def _cell(values: list[float]) -> str:
  if not values:
    return "-"
  return f"{np.mean(values):.2f} ± {np.std(values):.2f}"


def tables_markdown(results: dict) -> str:
  modes = results["modes"]
  b = results["budget"]
  out = [f"# Batch RL on the peer protocol: {results['dataset']}", "",
         f"Mean ± std (population) over the finished seeds of the last-quarter means (the "
         f"peer's convention); batch learners {b['batch_epochs']} epochs x "
         f"{b['batch_updates_per_epoch']} updates, online presets {b['online_epochs']} epochs; "
         f"{b['eval_sessions']} true-env episodes per evaluation. The peer's column is "
         "EasyRL4Rec's published Coat table (another env: Coat's completed matrix).", ""]
  names = list(results["methods"])
  for i, mode in enumerate(modes):
    peer = i == 0 and mode == "FB"
    out += [f"## {mode}", "",
            "| method | seeds | R | Len | Ravg |" + (" peer Coat R / Len |" if peer else ""),
            "|---|---|---|---|---|" + ("---|" if peer else "")]
    rows = [(n, results["methods"][n]) for n in names]
    if results.get("random"):
      rows.append(("random", results["random"][mode] | {"seeds": None}))
    for name, m in rows:
      vals = m[mode] if name != "random" else m
      seeds = "" if m.get("seeds") is None else str(len(m["seeds"]))
      line = (f"| {name} | {seeds} | {_cell(vals['R'])} | {_cell(vals['Len'])} | "
              f"{_cell(vals['Ravg'])} |")
      if peer:
        p = results["peer_coat_FB"].get(name)
        line += f" {p['R']:.2f} / {p['Len']:.2f} |" if p else " |"
      out.append(line)
    out.append("")
  out += ["## Runs", "", "| run | R@0 | last R | epochs | wall s | rate |", "|---|---|---|---|---|---|"]
  for name, r in results["runs"].items():
    rate = "" if not r["rate"] else ", ".join(f"{k} {v:,.0f}" for k, v in r["rate"].items())
    wall = "" if r["wall_s"] is None else f"{r['wall_s']:.0f}"
    out.append(f"| {name} | {r['R@0']:.2f} | {r['last_R']:.2f} | {r['epochs']} | {wall} | "
               f"{rate} |")
  return "\n".join(out) + "\n"


def write_curves(path: str, cfg: TableConfig, results: dict, log) -> bool:
  try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
  except ImportError:
    log("curves: skipped (matplotlib is not installed: pip install -e '.[plots]')")
    return False
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for method, m in results["methods"].items():
    curves = [[r["R"] for r in read_rows(run_dir(cfg.workdir, method, s))] for s in m["seeds"]]
    y = np.asarray([c[:min(map(len, curves))] for c in curves])
    x = np.arange(y.shape[1]) / max(1, y.shape[1] - 1)
    mean, std = y.mean(0), y.std(0)
    ax.plot(x, mean, label=method)
    ax.fill_between(x, mean - std, mean + std, alpha=0.15)
  if results.get("random"):
    ax.axhline(np.mean(results["random"][results["modes"][0]]["R"]), color="gray",
               linestyle=":", label="random")
  ax.set_xlabel("share of the run's budget (epoch / epochs)")
  ax.set_ylabel(f"true-env {results['modes'][0]} R (mean ± std over seeds)")
  ax.set_title(f"{results['dataset']}: batch RL and online baselines, peer protocol")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7, ncol=2)
  fig.tight_layout()
  tmp = path + ".tmp.png"
  fig.savefig(tmp, dpi=110)
  plt.close(fig)
  os.replace(tmp, path)
  return True


class RunFailed(Exception):
  """A run's CLI exited with an error (its log names why): exit 1, not bad input's 2."""


def run_table(cfg: TableConfig, log=print) -> dict:
  """The whole table (module docstring); returns results.json's content."""
  cfg.validate()
  path = os.path.join(cfg.workdir, "offline_table.json")
  config.check_same_shaping(cfg, path, SHAPING, "a table", "--")
  os.makedirs(cfg.workdir, exist_ok=True)
  atomic_write_text(path, json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")
  env = build_env(cfg, log)
  check_env(env, "dorl" in cfg.methods)
  walls_path = os.path.join(cfg.workdir, "walls.json")
  walls = read_json_object(walls_path) if os.path.isfile(walls_path) else {}
  tasks = []
  order = sorted(cfg.methods, key=COST_ORDER.index)
  for seed in range(cfg.seeds):
    for method in order:
      run = run_dir(cfg.workdir, method, seed)
      if not finished(run, cfg.epochs_of(method)):
        tasks.append((f"{method}/seed{seed}", command(cfg, env, method, seed), run + ".log"))
  log(f"{len(tasks)} runs to do ({cfg.jobs} at once), "
      f"{len(cfg.methods) * cfg.seeds - len(tasks)} finished before")
  lock = threading.Lock()

  def write(results):
    atomic_write_text(os.path.join(cfg.workdir, "results.json"),
                      json.dumps(results, indent=2) + "\n")
    atomic_write_text(os.path.join(cfg.workdir, "tables.md"), tables_markdown(results))

  def on_done(name, wall):
    with lock:
      walls[name] = round(wall, 1)
      atomic_write_text(walls_path, json.dumps(walls, indent=2) + "\n")
      write(collect(cfg, env, walls))
      log(f"{name}: done in {wall:.0f} s")

  runner = Runner(cfg.jobs)
  failures = runner.run_all(tasks, on_done)
  results = collect(cfg, env, walls)
  write(results)
  write_curves(os.path.join(cfg.workdir, "curves.png"), cfg, results, log)
  if failures:
    raise RunFailed(f"{'; '.join(failures)} (each run's output: "
                    f"{cfg.workdir}/runs/METHOD/seedS.log)")
  if runner.stopping:
    raise Preempted(f"stopped by SIGTERM; rerun the same command to resume {cfg.workdir}")
  log(f"wrote {cfg.workdir}/results.json, tables.md, curves.png")
  return results


def define_flags() -> None:
  """The CLI's flags, defined only when this module runs as the program (tests import it)."""
  global WORKDIR
  config.define_flags(TableConfig, skip=("workdir",))
  WORKDIR = flags.DEFINE_string("workdir", None, "experiment directory (resumed if it exists)")


def config_from_flags() -> TableConfig:
  return config.from_flags(TableConfig, workdir=WORKDIR.value or "")


def main(argv):
  cli.reject_extra_args(argv)
  try:
    run_table(config_from_flags(), log=lambda s: print(s, flush=True))
  except RunFailed as e:
    print(f"error: {cli.one_line(e)}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  define_flags()
  cli.run(main)
