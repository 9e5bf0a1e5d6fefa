"""python -m experiments.lea --dataset=NAME [--data_dir=PATH] --labeler=oracle|hf|vllm
    [--model=PATH --lora=DIR] --seeds=3 --workdir=DIR [--backbones=sasrec,gru
    --agents=normal,snqn,sa2c --epochs=10 --augment_epoch=2 --num_requests=0 --env=ENV ...]

LEA's Table 2 on one dataset (paper 002, Sec. 5): every (backbone, learner) of jaxrec.offline
trained with and without LEA's augmentation, --seeds seeds each, HR@k / NDCG@k on the test
users. The pipeline of one (backbone, learner, seed), each step skipped on a rerun when done:

Seed by seed (so results.json, tables.md and curves.png are rewritten after each seed, over
the seeds finished):

  1. train the plain run for --augment_epoch epochs           runs/B-A/seedS (jaxrec.offline)
  2. request shards from its checkpoint there: the supervised head's top-5 for the train
     transitions (every one, or --num_requests)                aug/B-A/seedS/requests
  3. the +aug run starts as a copy of that early-stage run     runs/B-A+aug/seedS
  4. the plain run continues to --epochs
  5. the labeler labels every request directory (one backend built once for all of them:
     oracle = the simulated judge on ENV's train user model, NOT an LLM; hf / vllm = --model,
     with --lora's adapter)                                    aug/B-A/seedS/labels
  6. the +aug run continues to --epochs with --augment (w_ah, w_aq; augmented actions used
     from update augment_epoch x updates-per-epoch on, i.e. right after the early stage)

So plain and +aug runs share their first --augment_epoch epochs bit for bit (LEA: "after an
early training stage, we sample the top-5 items from the supervised head"), and differ only by
the augmentation from then on. Steps 1-4 run for every method of a seed before the labeler,
and one labeler backend serves the whole experiment (a model loads once). The oracle needs an env directory built from the same dataset (--env, or
WORKDIR/env built with experiments.build_envs' defaults).

WORKDIR holds lea.json (the flags; a rerun with other shaping flags is refused), results.json
(`methods.<name>.{HR@5, ...}` lists over seeds, names like sasrec-normal, sasrec-sa2c+aug,
plus `popularity`), tables.md (LEA Table 2's layout, mean ± std over seeds) and curves.png
(test HR@10 per epoch, mean over seeds).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

import numpy as np
from absl import flags

from jaxrec import cli, config, shards
from jaxrec.config import nested, option
from jaxrec.data import flags as data_flags
from jaxrec.data import registry
from jaxrec.data.synthetic import SyntheticConfig
from jaxrec.errors import ConfigError, DataError
from jaxrec.io import atomic_write_text, read_json_object
from jaxrec.offline import augment
from jaxrec.offline.learners import LEARNERS
from jaxrec.offline.metrics import KS
from jaxrec.offline.networks import BACKBONES
from jaxrec.offline.run import OfflineConfig, train_and_evaluate
from jaxrec.oracle_config import OracleConfig

LABELERS = ("oracle", "hf", "vllm")
NAMES = tuple(f"{m}@{k}" for k in KS for m in ("HR", "NDCG"))
# lea.json keys a rerun must repeat: they shape every result in the workdir.
SHAPING = ("dataset", "data_dir", "labeler", "model", "lora", "epochs", "augment_epoch",
           "num_requests", "w_ah", "w_aq", "offline", "synthetic", "prep", "env")


@dataclasses.dataclass(frozen=True)
class LeaConfig:
  labeler: str = option("oracle", "who labels the augmentation requests: oracle (simulated "
                        "judge on --env's train user model, NOT an LLM), hf or vllm (--model)",
                        choices=LABELERS)
  model: str = option("", "hf / vllm: local model directory")
  lora: str = option("", "hf / vllm: adapter directory of llm_labeler.tune")
  env: str = option("", "oracle: env directory built from the same dataset (default: "
                    "WORKDIR/env, built with experiments.build_envs' defaults)")
  seeds: int = option(3, "seeds per method")
  backbones: tuple[str, ...] = option(("sasrec", "gru"), "offline backbones")
  agents: tuple[str, ...] = option(("normal", "snqn", "sa2c"), "offline learners")
  epochs: int = option(10, "epochs of every run")
  augment_epoch: int = option(2, "the early stage: epochs before the top-5 requests are "
                              "written and the augmentation starts")
  num_requests: int = option(0, "augmentation requests per run: 0 = every train transition")
  w_ah: float = option(0.1, "weight of the augmented cross-entropy (LEA's best: 0.1)")
  w_aq: float = option(0.01, "weight of the augmented Q loss (LEA's best: 0.01)")
  offline: OfflineConfig = nested(OfflineConfig(), "offline_")  # sizes, lr, batch, ...
  dataset: str = "synthetic"
  data_dir: str = ""
  synthetic: SyntheticConfig = SyntheticConfig()
  prep: registry.PrepConfig = registry.PrepConfig()
  workdir: str = ""

  def validate(self) -> None:
    if not self.workdir:
      raise ConfigError("--workdir is required")
    if self.labeler not in LABELERS:
      raise ConfigError(f"--labeler must be one of {', '.join(LABELERS)}, got {self.labeler!r}")
    if self.labeler != "oracle" and not self.model:
      raise ConfigError(f"--labeler={self.labeler} needs --model (a local model path)")
    if self.labeler == "oracle" and (self.model or self.lora):
      raise ConfigError("--model / --lora apply to --labeler=hf or vllm")
    if self.env and self.labeler != "oracle":
      raise ConfigError("--env applies to --labeler=oracle")
    for f, allowed in (("backbones", BACKBONES), ("agents", LEARNERS)):
      bad = [v for v in getattr(self, f) if v not in allowed]
      if bad or not getattr(self, f):
        raise ConfigError(f"--{f} must be a non-empty list of {', '.join(allowed)}; got "
                          f"{','.join(getattr(self, f))}")
    if self.seeds <= 0 or self.num_requests < 0:
      raise ConfigError("--seeds must be positive and --num_requests >= 0")
    if not 1 <= self.augment_epoch < self.epochs:
      raise ConfigError(f"--augment_epoch must be in 1..--epochs - 1 ({self.epochs - 1}), got "
                        f"{self.augment_epoch}")
    self.run_config("normal", "sasrec", 0).validate()

  def run_config(self, agent: str, backbone: str, seed: int, **kw) -> OfflineConfig:
    return dataclasses.replace(self.offline, agent=agent, backbone=backbone, seed=seed,
                               dataset=self.dataset, data_dir=self.data_dir,
                               synthetic=self.synthetic, prep=self.prep, w_ah=self.w_ah,
                               w_aq=self.w_aq, **kw)

  def methods(self) -> list[tuple[str, str]]:
    return [(b, a) for b in self.backbones for a in self.agents]


def run_dir(workdir: str, method: str, seed: int) -> str:
  return os.path.join(workdir, "runs", method, f"seed{seed}")


def aug_dir(workdir: str, method: str, seed: int) -> str:
  return os.path.join(workdir, "aug", method, f"seed{seed}")


def _finished(run: str, epochs: int) -> bool:
  path = os.path.join(run, "results.json")
  return os.path.isfile(path) and read_json_object(path).get("epochs") == epochs


def _epoch_of(run: str) -> int:
  from jaxrec.checkpoint import latest_step
  return latest_step(run) or 0 if os.path.isdir(run) else 0


def _updates_at(run: str, epoch: int) -> int:
  with open(os.path.join(run, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  return next(int(r["updates"]) for r in rows if r["epoch"] == epoch)


def ensure_env(cfg: LeaConfig, ds, log) -> str:
  if cfg.labeler != "oracle":
    return ""
  if cfg.env:
    return cfg.env
  from jaxrec.envs import build
  env_dir = os.path.join(cfg.workdir, "env")
  if not os.path.isfile(os.path.join(env_dir, "env.json")):
    log(f"env: building {env_dir} for the oracle (experiments.build_envs' defaults)")
    shutil.rmtree(env_dir, ignore_errors=True)
    build.build_envs(ds, build.BuildConfig(), env_dir, log=lambda s: log(f"  [env] {s}"))
  return env_dir


def early_stage(cfg: LeaConfig, ds, backbone: str, agent: str, seed: int, log) -> None:
  """Steps 1-4 of the module docstring for one run."""
  method = f"{backbone}-{agent}"
  plain, plus = run_dir(cfg.workdir, method, seed), run_dir(cfg.workdir, method + "+aug", seed)
  req = os.path.join(aug_dir(cfg.workdir, method, seed), augment.REQUESTS)
  quiet = lambda s: log(f"  [{method} seed {seed}] {s}")
  if not shards.is_done(req) or not os.path.isdir(plus):
    if _epoch_of(plain) < cfg.augment_epoch:
      log(f"{method} seed {seed}: early stage, {cfg.augment_epoch} epochs")
      train_and_evaluate(cfg.run_config(agent, backbone, seed, epochs=cfg.augment_epoch), plain,
                         log=quiet, dataset=ds)
    if _epoch_of(plain) != cfg.augment_epoch:
      raise DataError(f"{plain}: at epoch {_epoch_of(plain)}, its augmentation requests need "
                      f"the epoch {cfg.augment_epoch} checkpoint; use a fresh --workdir")
    if not shards.is_done(req):
      augment.write_requests(plain, os.path.dirname(req), augment.AugmentConfig(
          num=cfg.num_requests, seed=seed), log=quiet, dataset=ds)
    if not os.path.isdir(plus):
      tmp = plus + ".tmp"
      shutil.rmtree(tmp, ignore_errors=True)
      shutil.copytree(plain, tmp)
      os.replace(tmp, plus)
  if not _finished(plain, cfg.epochs):
    log(f"{method} seed {seed}: to epoch {cfg.epochs}")
    train_and_evaluate(cfg.run_config(agent, backbone, seed, epochs=cfg.epochs), plain,
                       log=quiet, dataset=ds)


def label_all(cfg: LeaConfig, env_dir: str, seed: int, backends: list, log) -> None:
  """Step 5 for one seed: every request directory's pending shards, with one backend for the
  whole experiment (built on first use, kept in `backends`)."""
  from llm_labeler import job
  for backbone, agent in cfg.methods():
    root = aug_dir(cfg.workdir, f"{backbone}-{agent}", seed)
    req, lab = (os.path.join(root, d) for d in (augment.REQUESTS, augment.LABELS))
    pending = set(shards.list_shards(req)) - (
        set(shards.list_shards(lab)) if os.path.isdir(lab) else set())
    if not pending:
      continue
    lcfg = job.LabelConfig(requests=req, out=lab, backend=cfg.labeler, env=env_dir,
                           model=cfg.model, lora=cfg.lora, seed=seed, oracle=OracleConfig())
    if not backends:
      backends.append(job.make_backend(lcfg, shards.directory_meta(req)))
      log(f"labeler: {backends[0].model}")
    summary = job.label_directory(lcfg, log=lambda s: None, backend=backends[0])
    log(f"labels {backbone}-{agent} seed {seed}: {summary['rows']} rows, "
        f"{summary['invalid']} invalid")


def late_stage(cfg: LeaConfig, ds, backbone: str, agent: str, seed: int, log) -> None:
  """Step 6: the +aug run to --epochs with the labeled augmentation."""
  method = f"{backbone}-{agent}"
  plus = run_dir(cfg.workdir, method + "+aug", seed)
  if _finished(plus, cfg.epochs):
    return
  log(f"{method}+aug seed {seed}: to epoch {cfg.epochs} with the augmentation")
  start = _updates_at(plus, cfg.augment_epoch)
  train_and_evaluate(cfg.run_config(agent, backbone, seed, epochs=cfg.epochs,
                                    augment=aug_dir(cfg.workdir, method, seed),
                                    augment_start=start), plus,
                     log=lambda s: log(f"  [{method}+aug seed {seed}] {s}"), dataset=ds)


def collect(cfg: LeaConfig) -> dict:
  """results.json's content from the finished runs of seeds 0..cfg.seeds-1."""
  methods, popularity, curves = {}, [], {}
  extra = {}
  for backbone, agent in cfg.methods():
    for suffix in ("", "+aug"):
      name = f"{backbone}-{agent}{suffix}"
      per_seed = []
      for seed in range(cfg.seeds):
        d = run_dir(cfg.workdir, name, seed)
        res = read_json_object(os.path.join(d, "results.json"))
        per_seed.append(res["methods"][f"{backbone}-{agent}"])
        if not suffix:
          popularity.append(res["methods"]["popularity"])
        else:
          extra.setdefault(name, []).append(res.get("augment_rows"))
        with open(os.path.join(d, "metrics.jsonl")) as f:
          rows = [json.loads(line) for line in f if line.strip()]
        curves.setdefault(name, []).append([r["HR@10"] for r in rows])
      methods[name] = {n: [float(p[n]) for p in per_seed] for n in NAMES}
  methods["popularity"] = {n: [float(p[n]) for p in popularity[:cfg.seeds]] for n in NAMES}
  return {"dataset": cfg.dataset, "labeler": cfg.labeler, "model": cfg.model or None,
          "seeds": cfg.seeds, "epochs": cfg.epochs, "augment_epoch": cfg.augment_epoch,
          "w_ah": cfg.w_ah, "w_aq": cfg.w_aq, "augmented_rows": extra, "methods": methods,
          "curves_HR@10": curves}


def _cell(values: list[float]) -> str:
  return f"{np.mean(values):.4f} ± {np.std(values):.4f}"


def tables_markdown(results: dict) -> str:
  """LEA Table 2's layout: one row per method (backbone groups), HR / NG at 5, 10, 20."""
  cols = [f"{m}@{k}" for k in KS for m in ("HR", "NDCG")]
  head = " | ".join(c.replace("NDCG", "NG") for c in cols)
  out = [f"# {results['dataset']}: offline learners with and without LEA augmentation",
         "", f"Mean ± std over {results['seeds']} seeds (std: population, ddof 0); "
         f"{results['epochs']} epochs, augmentation from epoch {results['augment_epoch']} "
         f"(w_ah {results['w_ah']}, w_aq {results['w_aq']}); labels: {results['labeler']}"
         + (" (a simulated judge, not an LLM)" if results["labeler"] == "oracle" else
            f" {results['model']}") + ".", "",
         f"| Model | {head} |", "|---" * (len(cols) + 1) + "|"]
  for name, vals in results["methods"].items():
    out.append(f"| {name} | " + " | ".join(_cell(vals[c]) for c in cols) + " |")
  return "\n".join(out) + "\n"


def write_curves(path: str, results: dict, log) -> bool:
  try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
  except ImportError:
    log("curves: skipped (matplotlib is not installed: pip install -e '.[plots]')")
    return False
  backbones = sorted({n.split("-")[0] for n in results["curves_HR@10"]})
  fig, axes = plt.subplots(1, len(backbones), figsize=(6 * len(backbones), 4), squeeze=False)
  for ax, b in zip(axes[0], backbones):
    for name, runs in results["curves_HR@10"].items():
      if name.split("-")[0] != b:
        continue
      y = np.asarray([r[:min(map(len, runs))] for r in runs])
      m, s = y.mean(0), y.std(0)
      ax.plot(np.arange(len(m)), m, label=name, linestyle="--" if name.endswith("+aug") else "-")
      ax.fill_between(np.arange(len(m)), m - s, m + s, alpha=0.15)
    pop = np.mean(results["methods"]["popularity"]["HR@10"])
    ax.axhline(pop, color="gray", linestyle=":", label="popularity")
    ax.axvline(results["augment_epoch"], color="black", linewidth=0.5)
    ax.set_xlabel("epoch (vertical line: augmentation starts)")
    ax.set_ylabel("test HR@10 (mean over seeds)")
    ax.set_title(f"{results['dataset']}: {b}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  fig.tight_layout()
  tmp = path + ".tmp.png"
  fig.savefig(tmp, dpi=110)
  plt.close(fig)
  os.replace(tmp, path)
  return True


def run_lea(cfg: LeaConfig, log=print, dataset=None) -> dict:
  """The whole pipeline (module docstring); returns results.json's content. dataset: use it
  instead of loading cfg.dataset (tests)."""
  cfg.validate()
  path = os.path.join(cfg.workdir, "lea.json")
  config.check_same_shaping(cfg, path, SHAPING, "an experiment", "")
  ds = dataset or registry.load_dataset(cfg.dataset, cfg.data_dir or None, cfg.prep,
                                        cfg.synthetic)
  os.makedirs(cfg.workdir, exist_ok=True)
  atomic_write_text(path, json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")
  env_dir = ensure_env(cfg, ds, log)
  backends = []
  for seed in range(cfg.seeds):  # seed-major: the files cover the seeds finished so far
    for backbone, agent in cfg.methods():
      early_stage(cfg, ds, backbone, agent, seed, log)
    label_all(cfg, env_dir, seed, backends, log)
    for backbone, agent in cfg.methods():
      late_stage(cfg, ds, backbone, agent, seed, log)
    results = collect(dataclasses.replace(cfg, seeds=seed + 1))
    atomic_write_text(os.path.join(cfg.workdir, "results.json"),
                      json.dumps(results, indent=2) + "\n")
    atomic_write_text(os.path.join(cfg.workdir, "tables.md"), tables_markdown(results))
    write_curves(os.path.join(cfg.workdir, "curves.png"), results, log)
    log(f"seed {seed}: wrote {cfg.workdir}/results.json, tables.md, curves.png")
  return results


def define_flags() -> None:
  """The CLI's flags, defined only when this module runs as the program: tests import it beside
  other experiments (experiments.paper) whose flags share names (--workdir, --seeds)."""
  global WORKDIR
  config.define_flags(LeaConfig, skip=("offline.agent", "offline.backbone", "offline.seed",
                                       "offline.epochs", "offline.augment", "offline.w_ah",
                                       "offline.w_aq", "offline.augment_start"))
  WORKDIR = flags.DEFINE_string("workdir", None, "experiment directory (resumed if it exists)")


def config_from_flags() -> LeaConfig:
  return config.from_flags(LeaConfig, dataset=data_flags.DATASET.value,
                           data_dir=data_flags.DATA_DIR.value or "",
                           synthetic=data_flags.synthetic_config_from_flags(),
                           prep=data_flags.prep_config_from_flags(), workdir=WORKDIR.value or "")


def main(argv):
  cli.reject_extra_args(argv)
  run_lea(config_from_flags(), log=lambda s: print(s, flush=True))


if __name__ == "__main__":
  define_flags()
  cli.run(main)
