"""python -m experiments.bench_offline --out=FILE.json [--batch_size=256 --updates=20
--dataset=synthetic --rounds=3 --min_time=2 --dropout=0.1]

Training throughput (samples/s = updates x batch size per second) of SA2C on SASRec at the LEA
sizes (sequence 10, dim 64, 1 block, 1 head; 10 negatives; SASRec dropout 0.1 in both;
jaxrec.offline.run.OfflineConfig's defaults) on the dataset's train transitions, three ways, in
one run:

  jax      the fused loop: `--updates` updates in one jitted lax.scan (jaxrec.offline.loop,
           what `python -m jaxrec.offline` runs), the minibatches gathered on device
  pyloop   the same jitted update (make_train's scan of one update) called once per minibatch
           from a Python loop, the minibatch gathered on the host with NumPy
  torch    a plain PyTorch implementation of the same network and loss
           (experiments/sa2c_torch.py), trained as the SA2C authors' code trains: a Python loop
           per minibatch, two copies with a random role swap, double Q, negatives, two Adams

each in both phases: `warmup` (update counts below --warmup: SNQN's loss) and `sa2c` (after it:
the advantage-weighted ce, the second Adam). The headline keys `jax_samples_per_s`,
`torch_samples_per_s`, `pyloop_samples_per_s` and the ratios are the sa2c phase; every rate is
also given per phase (`jax_warmup_samples_per_s`, ...). Compilation (and torch's first call) is
not timed: each timed function is called once before timing (benchlib.best_time), and the
rates are the best call over `--rounds` interleaved rounds of `--min_time` seconds each, with
an f32 matmul timed in the same rounds as a reference of the machine's speed at the time.

The work of one update is counted on each side (`jax_flops_per_update`: XLA's cost analysis of
the one-update program, elementwise work included; `torch_flops_per_update`:
torch.utils.flop_counter, matmul-class ops only; `*_warmup_*` for the warm-up phase) and each
rate becomes GFLOP/s and a share of the same-run matmul (`{side}_gflops`,
`{side}_share_of_matmul`, `_warmup` variants); `share_of_matmul_for_3x_torch` is the share the
JAX program would need for 3x torch's sa2c samples/s.

torch runs with torch.set_num_threads(N), N = the CPU cores this process may use
(os.sched_getaffinity: under `taskset -c 1`, 1), the cores XLA's CPU backend sees as well.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from experiments import benchlib
from jaxrec import cli
from jaxrec.data import flags as data_flags
from jaxrec.errors import ConfigError
from jaxrec.offline.learners import LEARNERS
from jaxrec.offline.loop import make_train
from jaxrec.offline.networks import SupervisedQNet
from jaxrec.offline.run import OfflineConfig, load_splits
from jaxrec.offline.transitions import build_transitions

PHASES = ("warmup", "sa2c")
SIDES = ("jax", "pyloop", "torch")


def define_flags() -> None:
  """The CLI's flags, defined only when this module runs as the program: tests import it beside
  other experiments whose flags share names (--out)."""
  global OUT, BATCH, UPDATES, MIN_TIME, ROUNDS, DROPOUT
  OUT = flags.DEFINE_string("out", None, "JSON output file (also printed)")
  BATCH = flags.DEFINE_integer("batch_size", 256, "minibatch (SA2C code --batch_size 256)")
  UPDATES = flags.DEFINE_integer("updates", 20, "updates per timed call (each side)")
  MIN_TIME = flags.DEFINE_float("min_time", 2.0, "seconds to time each function per round")
  ROUNDS = flags.DEFINE_integer("rounds", 3, "interleaved timing rounds (matmul included)")
  DROPOUT = flags.DEFINE_float("dropout", OfflineConfig.dropout, "SASRec dropout of both sides "
                               "(jaxrec.offline's --dropout; 0: none)")




def bench_config(batch_size: int, **sizes) -> OfflineConfig:
  """The benchmarked config: sa2c on sasrec with OfflineConfig's (the authors') defaults."""
  return OfflineConfig(agent="sa2c", backbone="sasrec", batch_size=batch_size, **sizes)


def available_cores() -> int:
  return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def start_count(cfg: OfflineConfig, phase: str) -> int:
  """The update count a timed call starts from: 0 (warm-up) or --warmup (the sa2c phase)."""
  return 0 if phase == "warmup" else cfg.warmup


def jax_fns(cfg: OfflineConfig, num_items: int, data, updates: int, seed: int = 0):
  """-> ({"jax_<phase>", "pyloop_<phase>": zero-argument call of `updates` updates}, the
  initial state, {phase: XLA's flop count of one update}). Every call starts from the same
  state (nothing carries over)."""
  learner = LEARNERS[cfg.agent]
  net = SupervisedQNet(cfg.net(num_items), q_head=learner.q_head, dropout=cfg.dropout)
  init, epoch = make_train(learner, net, cfg.optimizer(), cfg.hparams(), cfg.batch_size,
                           updates)
  _, one = make_train(learner, net, cfg.optimizer(), cfg.hparams(), cfg.batch_size, 1)
  epoch, one = jax.jit(epoch), jax.jit(one)
  state0 = jax.jit(init)(jax.random.PRNGKey(seed))
  host = jax.tree_util.tree_map(np.asarray, data)
  n = host.action.shape[0]
  rng = np.random.default_rng(seed)
  keys = np.asarray(jax.random.split(jax.random.PRNGKey(seed + 1), updates))
  fns = {}
  # Both phases run one compiled program (the phase is a jnp.where on the update count), so
  # one cost analysis counts both.
  batch0 = jax.tree_util.tree_map(lambda x: x[:cfg.batch_size], host)
  flops = dict.fromkeys(PHASES, benchlib.xla_flops(one, state0, batch0, jax.random.PRNGKey(seed)))
  for phase in PHASES:
    state = state0._replace(updates=jnp.int32(start_count(cfg, phase)))
    fns[f"jax_{phase}"] = (lambda s=state: epoch(s, data, jax.random.PRNGKey(seed + 2))[0])

    def pyloop(s=state):
      perm = rng.permutation(n)
      for i in range(updates):
        idx = perm[i * cfg.batch_size:(i + 1) * cfg.batch_size]
        batch = jax.tree_util.tree_map(lambda x, i=idx: x[i], host)
        s, _ = one(s, batch, keys[i])
      return s

    fns[f"pyloop_{phase}"] = pyloop
  return fns, state0, flops


def torch_update_flops(trainer, cfg: OfflineConfig) -> dict:
  """{phase: flops of one torch update} by torch.utils.flop_counter (matmul-class operations
  only: mm, bmm, addmm, attention; XLA's count adds the elementwise work), counted on one extra
  update from the phase's start."""
  from torch.utils.flop_counter import FlopCounterMode
  out = {}
  for phase in PHASES:
    trainer.step = start_count(cfg, phase)
    with FlopCounterMode(display=False) as counter:
      trainer.update()
    out[phase] = float(counter.get_total_flops())
  return out


def torch_fns(cfg: OfflineConfig, num_items: int, data, updates: int, init_params,
              seed: int = 0):
  """-> ({"torch_<phase>": zero-argument call of `updates` updates}, the trainer); the torch
  copies start from the JAX init (init_params: stacked [2, ...])."""
  from experiments import sa2c_torch
  trainer = sa2c_torch.Trainer(
      {f: np.asarray(getattr(data, f)) for f in data._fields
       if getattr(data, f) is not None}, num_items, cfg.history_len,
      cfg.dim, cfg.num_layers, cfg.num_heads, cfg.batch_size, cfg.learning_rate, cfg.lr_2,
      cfg.gamma, cfg.neg, cfg.neg_reward, cfg.warmup, cfg.clip, cfg.dropout, seed=seed,
      init=init_params)
  fns = {f"torch_{phase}": (lambda p=phase: trainer.run(updates, start_count(cfg, p)))
         for phase in PHASES}
  return fns, trainer


def run_bench(cfg: OfflineConfig, dataset: str, updates: int, rounds: int, min_time: float,
              synthetic=None, data_dir: str = "", prep=None) -> dict:
  """The benchmark's JSON (module docstring)."""
  try:
    import torch
  except ImportError:
    raise ConfigError("experiments.bench_offline needs PyTorch for its reference (the `hf` "
                      "extra: pip install -e .[hf])") from None
  if updates <= 0:
    raise ConfigError(f"--updates must be positive, got {updates}")
  benchlib.check_rounds(rounds)
  cfg.validate()
  cores = available_cores()
  torch.set_num_threads(cores)
  kw = {"dataset": dataset, "data_dir": data_dir}
  kw |= {"synthetic": synthetic} if synthetic is not None else {}
  kw |= {"prep": prep} if prep is not None else {}
  cfg = dataclasses.replace(cfg, **kw)
  ds, train_ds, _ = load_splits(cfg)
  data = build_transitions(train_ds, cfg.history_len)
  if data.size < cfg.batch_size * updates:
    raise ConfigError(f"--updates {updates} x --batch_size {cfg.batch_size} is more than the "
                      f"{data.size} train transitions of dataset {ds.name!r}")
  fns, state0, jax_flops = jax_fns(cfg, ds.num_items, data, updates)
  torch_side, trainer = torch_fns(cfg, ds.num_items, data, updates, state0.params)
  fns |= torch_side
  secs, matmul = benchlib.best_times_with_matmul(fns, rounds, min_time)
  flops = {"jax": jax_flops, "torch": torch_update_flops(trainer, cfg)}
  samples = updates * cfg.batch_size
  result = benchlib.machine() | {
      "dataset": ds.name, "num_items": ds.num_items, "train_transitions": data.size,
      "agent": cfg.agent, "backbone": cfg.backbone, "history_len": cfg.history_len,
      "dim": cfg.dim, "num_layers": cfg.num_layers, "num_heads": cfg.num_heads,
      "neg": cfg.neg, "dropout": cfg.dropout, "batch_size": cfg.batch_size,
      "updates_per_call": updates,
      "warmup": cfg.warmup, "cores": cores, "torch_threads": torch.get_num_threads(),
      "torch": torch.__version__, "rounds": rounds, "min_time_s": min_time,
      "matmul_gflops": matmul, "headline_phase": "sa2c", "compile_time_timed": False}
  for name, s in secs.items():
    side, phase = name.split("_")
    result[f"{side}_{phase}_samples_per_s"] = samples / s
  for side in SIDES:
    result[f"{side}_samples_per_s"] = result[f"{side}_sa2c_samples_per_s"]
  # The work, counted: each side's flops per update and the rate they ran at, against the
  # same-run matmul (pyloop runs jax's program, so jax's count is its too).
  for side, count in flops.items():
    result[f"{side}_flops_per_update"] = count["sa2c"]
    result[f"{side}_warmup_flops_per_update"] = count["warmup"]
  for side in SIDES:
    count = flops["torch" if side == "torch" else "jax"]
    for phase in PHASES:
      sfx = "" if phase == "sa2c" else f"_{phase}"
      rate = result[f"{side}_{phase}_samples_per_s"] / cfg.batch_size * count[phase] / 1e9
      result[f"{side}{sfx}_gflops"] = rate
      result[f"{side}{sfx}_share_of_matmul"] = rate / matmul
  # what a lead of 3x torch's samples/s (issue 20's target) asks of the jax program
  result["share_of_matmul_for_3x_torch"] = (3 * result["torch_sa2c_samples_per_s"]
                                            / cfg.batch_size * flops["jax"]["sa2c"] / 1e9
                                            / matmul)
  for phase in PHASES:
    sfx = "" if phase == "sa2c" else f"_{phase}"
    result[f"jax_over_torch{sfx}"] = (result[f"jax_{phase}_samples_per_s"]
                                      / result[f"torch_{phase}_samples_per_s"])
    result[f"jax_over_pyloop{sfx}"] = (result[f"jax_{phase}_samples_per_s"]
                                       / result[f"pyloop_{phase}_samples_per_s"])
    result[f"pyloop_over_torch{sfx}"] = (result[f"pyloop_{phase}_samples_per_s"]
                                         / result[f"torch_{phase}_samples_per_s"])
  return result


def main(argv):
  cli.reject_extra_args(argv)
  result = run_bench(bench_config(BATCH.value, dropout=DROPOUT.value), data_flags.DATASET.value, UPDATES.value,
                     ROUNDS.value, MIN_TIME.value, data_flags.synthetic_config_from_flags(),
                     data_flags.DATA_DIR.value or "", data_flags.prep_config_from_flags())
  for phase in PHASES:
    print(f"{phase}: " + ", ".join(f"{side} {result[f'{side}_{phase}_samples_per_s']:,.0f}"
                                   for side in SIDES) + " samples/s", flush=True)
  benchlib.report(result, OUT.value)


if __name__ == "__main__":
  define_flags()
  cli.run(main)
