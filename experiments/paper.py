"""python -m experiments.paper --dataset=NAME [--data_dir=PATH] --labeler=oracle|vllm|hf
    --seeds=3 --workdir=DIR [--preset=tiny|default|paper|long|cpu_llm] [--model=PATH
    --lora=ADAPTER | --tune] [--template=yesno-v1] [--workers=N]

Reproduces the paper's Tables 3-5 and Figures 6-11 (Wang et al., WSDM 2025) end to end:
  1. env       WORKDIR/env: the train / test simulators (built once, reused by reruns);
  2. labels    oracle: none (the simulated judge runs inside pre-training; NOT an LLM);
               vllm / hf: (with --tune: `llm_labeler.tune` writes WORKDIR/adapter first)
               `jaxrec.sample_requests` + `llm_labeler.label` (subprocesses, with the
               adapter of --lora / --tune) write request / label shards to WORKDIR/labels,
               and `experiments.label_quality` measures that labeler on held-out test-split
               interactions (WORKDIR/labels/quality.json, a table in tables.md);
  3. pretrain  iALP (jaxrec.train.pretraining: --labeler=inproc for oracle, shards otherwise);
  4. runs      DQN, PG, A2C, iALP, A-iALP_ft, A-iALP_ap and LLMOnline with the same env-step
               budget over the seeds (WORKDIR/runs/<method>/seed<k>: jaxrec.train run dirs,
               each with its own orbax resume), plus the exploration-strategy runs of
               Figures 10-11 (WORKDIR/runs/explore/<method>/<strategy>/seed<k>);
  5. report    results.json, tables.md, figures/*.png (experiments/paper_report.py).
A rerun with the same flags skips finished runs and resumes unfinished ones; a SIGTERM during a
label stage is passed on to it (it stops after the shard or tune step in flight), during the
runs to the worker processes (each run stops after its epoch in flight, saved; no new run
starts), and the launcher exits 143. Runs go to
--workers processes (default: 2 where there are 2 cores) sharing a persistent XLA compilation
cache (WORKDIR/xla_cache), so each program is compiled once.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

from absl import flags

from experiments import paper_report
from experiments.paper_tasks import Task, run_tasks, setup_compile_cache
from jaxrec import cli, config
from jaxrec.config import option
from jaxrec.agents.a2c import ADVANTAGES
from jaxrec.agents.registry import PRETRAINED, AgentConfig
from jaxrec.agents.types import STRATEGIES
from jaxrec.data import flags as data_flags
from jaxrec.data import registry, synthetic
from jaxrec.envs import build, peer
from jaxrec.errors import ConfigError, DataError
from jaxrec.faults import PREEMPTED_EXIT, Forwarding, Preempted
from jaxrec.io import atomic_write_text
from jaxrec.train.pretraining import PretrainConfig
from jaxrec.train.run import TrainConfig

# results.json / table name -> jaxrec agent
METHODS = {"DQN": "dqn", "PG": "pg", "A2C": "a2c", "iALP": "ialp", "A-iALP_ft": "ialp_ft",
           "A-iALP_ap": "ialp_ap", "LLMOnline": "llm_online"}
LABELERS = ("oracle", "vllm", "hf")


@dataclasses.dataclass(frozen=True)
class Preset:
  """Everything a preset fixes. `train` / `pretrain` are templates: agent, env, seed, explore,
  init_from and labeler are filled per run."""
  build: build.BuildConfig
  synthetic: synthetic.SyntheticConfig
  train: TrainConfig
  pretrain: PretrainConfig
  pretrain_per_seed: bool  # False: one iALP shared by every seed's runs (the paper's setup)
  explore_methods: tuple[str, ...]  # Figures 10-11: these under each strategy
  explore_seeds: int  # seeds of the exploration runs (0 = all)
  num_requests: int  # vllm / hf: requests sampled for offline labeling
  # vllm / hf: --tune's examples and history window (llm_labeler.tune), the history labels show
  # without an adapter (0: all the request holds), held-out prompts of the label-quality stage.
  tune_examples: int = 1000  # the paper's "1000 randomly sampled interactions" (Sec. 5.1)
  tune_history: int = 10
  label_history: int = 0
  quality_num: int = 200
  # vllm / hf: rows per request shard (jaxrec.sample_requests --shard_size): the label job
  # commits one shard at a time, so a stopped label stage keeps every finished shard. The rows
  # do not depend on it (the requests are sampled first, then cut into shards).
  request_shard_size: int = 10_000


# The default preset is the README's main job: <= 10 min on a 2-core CPU, at the paper's budget
# of ~50k env steps per method (Sec. 5.1: 50k). 32 sessions: a PG update every 32 x 32 = 1,024
# steps and an A2C (value critic) update every 32 x 10 = 320, so every method gets exactly the
# same 51,200 steps in epochs of 10,240.
PRESETS = {
    "tiny": Preset(
        build=build.BuildConfig(seq_steps=100, max_len=8),
        synthetic=synthetic.SyntheticConfig(num_users=200, num_items=80, num_genres=4,
                                            mean_length=10),
        train=TrainConfig(num_sessions=8, total_steps=2560, steps_per_epoch=1280, eval_sessions=32,
                          agent_cfg=AgentConfig(dim=16, num_layers=1, num_heads=1, min_buffer=64,
                                                batch_size=32, num_candidates=4)),
        pretrain=PretrainConfig(num_sessions=16, episode_len=4, episodes_per_epoch=1, epochs=2,
                                batch_size=32, buffer_size=1024, eval_sessions=32,
                                num_candidates=4,
                                agent_cfg=AgentConfig(dim=16, num_layers=1, num_heads=1)),
        pretrain_per_seed=False, explore_methods=("A2C", "A-iALP_ap"), explore_seeds=1,
        num_requests=64, tune_examples=16, quality_num=16),
    "default": Preset(
        build=build.BuildConfig(),
        synthetic=synthetic.SyntheticConfig(),
        train=TrainConfig(num_sessions=32, total_steps=51_200, steps_per_epoch=10_240,
                          eval_sessions=256),
        # Pre-training's per-epoch test evaluations only monitor it; iALP's R@0 is measured
        # by its online runs on eval_sessions like every method.
        pretrain=PretrainConfig(eval_sessions=64),
        pretrain_per_seed=False, explore_methods=("A2C", "A-iALP_ap"), explore_seeds=1,
        num_requests=10_000),
    "paper": Preset(
        build=build.BuildConfig(),
        synthetic=synthetic.SyntheticConfig(),
        train=TrainConfig(num_sessions=32, total_steps=51_200, steps_per_epoch=5_120,
                          eval_sessions=1024),
        pretrain=PretrainConfig(epochs=100),
        pretrain_per_seed=True, explore_methods=("A2C", "A-iALP_ft", "A-iALP_ap"),
        explore_seeds=0, num_requests=50_000),
}
# Beyond the paper's budget: the default preset with 512,000 env steps per method at
# EasyRL4Rec's 100 training sessions, where the learners' curves separate (docs/protocol.md).
PRESETS["long"] = dataclasses.replace(
    PRESETS["default"], explore_methods=(),
    train=TrainConfig(num_sessions=100, total_steps=512_000, steps_per_epoch=64_000,
                      eval_sessions=512))
# A real model on a 2-core CPU (--labeler=hf with SmolLM2-135M; issue 18): the default preset's
# envs, budget and pre-training, 1,000 labeled requests instead of 10,000 and prompts of 5
# history items instead of 10 (tuning, labeling and the label-quality check), no exploration
# runs, request shards of 100 (a few minutes of labeling each on this CPU, so a stopped label
# stage resumes at most one shard back); docs/labeler.md has its stage times.
PRESETS["cpu_llm"] = dataclasses.replace(
    PRESETS["default"], explore_methods=(), num_requests=1000, tune_history=5, label_history=5,
    request_shard_size=100)


@dataclasses.dataclass(frozen=True)
class PaperConfig:
  """`python -m experiments.paper`'s config; its options are the flags (the dataset flags are
  jaxrec.data.flags')."""
  dataset: str = "synthetic"
  data_dir: str = ""
  labeler: str = option("oracle", f"one of {', '.join(LABELERS)}: oracle = the simulated judge "
                        "(not an LLM); vllm / hf = an LLM via llm_labeler")
  model: str = option("", "vllm / hf: local model path for llm_labeler.label")
  seeds: int = option(3, "seeds 0..N-1 of every method")
  workdir: str = option("", "experiment directory (created; resumed)")
  preset: str = option("default", f"one of {', '.join(PRESETS)}")
  workers: int = option(0, "parallel run processes (0 = min(2, cores))")
  methods: tuple[str, ...] = option(tuple(METHODS), "subset of the methods to run")
  explore: bool = option(True, "exploration-strategy runs (Figures 10-11)")
  protocol: str = option("paper", "the envs: paper (a user model per split) or peer (EasyRL4Rec "
                         "/ DORL: the fitted model trains, --true_matrix evaluates)",
                         choices=build.PROTOCOLS)
  true_matrix: str = option("", "--protocol=peer: the ground-truth rating matrix (text or .npy; "
                            "synthetic: the generator's; kuairec: small_matrix.csv)")
  lora: str = option("", "vllm / hf: label with this LoRA adapter of llm_labeler.tune (its "
                     "manifest is checked against --model, the template and k)")
  tune: bool = option(False, "vllm / hf: LoRA-tune the labeling model on the train env's "
                      "logged interactions first (llm_labeler.tune as a resumable stage, "
                      "WORKDIR/adapter; the paper's Sec. 5.1) and label with it")
  template: str = option("", "vllm / hf: the labeling prompt: '' = Table 1 (or the --lora "
                         "adapter's); yesno-v1 = one Yes/No prompt per candidate (--tune: "
                         "tuned with the listwise loss)", choices=("", "yesno-v1"))
  pretrain_advantage: str = option("td", "iALP pre-training's actor weight: td = paper Eq. 9; "
                                   "baseline = Q(s, a) - sum pi Q(s, .), not the paper's, which "
                                   "learns from offline label shards (docs/labeler.md)",
                                   choices=ADVANTAGES)

  def validate(self) -> None:
    if not self.workdir:
      raise ConfigError("--workdir is required")
    if self.labeler not in LABELERS:
      raise ConfigError(f"--labeler must be one of {', '.join(LABELERS)}; got {self.labeler!r}")
    if self.seeds <= 0:
      raise ConfigError(f"--seeds must be positive, got {self.seeds}")
    if self.preset not in PRESETS:
      raise ConfigError(f"--preset must be one of {', '.join(PRESETS)}; got {self.preset!r}")
    if self.workers < 0:
      raise ConfigError(f"--workers must be >= 0 (0 = auto), got {self.workers}")
    if self.dataset not in registry.DATASETS:
      raise ConfigError(f"--dataset must be one of {', '.join(registry.DATASETS)}; "
                        f"got {self.dataset!r}")
    unknown = [m for m in self.methods if m not in METHODS]
    if unknown or not self.methods:
      raise ConfigError(f"--methods must be a non-empty subset of {', '.join(METHODS)}; "
                        f"got {', '.join(self.methods) or 'nothing'}")
    if self.protocol not in build.PROTOCOLS:
      raise ConfigError(f"--protocol must be one of {', '.join(build.PROTOCOLS)}; got "
                        f"{self.protocol!r}")
    if self.true_matrix and self.protocol != "peer":
      raise ConfigError("--true_matrix applies to --protocol=peer")
    if self.labeler in ("vllm", "hf") and not self.model:
      raise ConfigError(f"--labeler={self.labeler} needs --model (a local model path)")
    if (self.lora or self.tune) and self.labeler == "oracle":
      raise ConfigError(f"--{'lora' if self.lora else 'tune'} applies to --labeler=vllm|hf "
                        "(the oracle is not a model)")
    if self.lora and self.tune:
      raise ConfigError("--lora and --tune exclude each other (--tune writes WORKDIR/adapter)")
    if self.template not in ("", "yesno-v1") or (self.template and self.labeler == "oracle"):
      raise ConfigError(f"--template must be empty or yesno-v1, and applies to "
                        f"--labeler=vllm|hf; got --template={self.template!r} with "
                        f"--labeler={self.labeler}")
    if self.lora and not os.path.isfile(os.path.join(self.lora, "manifest.json")):
      raise ConfigError(f"--lora={self.lora}: no manifest.json there (an adapter directory of "
                        "llm_labeler.tune)")
    env_dir = os.path.join(self.workdir, "env")
    if self.dataset != "synthetic" and not self.data_dir and not os.path.isdir(env_dir):
      raise ConfigError(f"--dataset={self.dataset} needs --data_dir (the raw files; "
                        "docs/datasets.md lists them)")

  @property
  def num_workers(self) -> int:
    return self.workers or max(1, min(2, os.cpu_count() or 1))


def run_dir(workdir: str, method: str, seed: int, strategy: str = "") -> str:
  if strategy:
    return os.path.join(workdir, "runs", "explore", method, strategy, f"seed{seed}")
  return os.path.join(workdir, "runs", method, f"seed{seed}")


def pretrain_dir(workdir: str, preset: Preset, seed: int) -> str:
  return os.path.join(workdir, "pretrain", f"seed{seed}" if preset.pretrain_per_seed
                      else "shared")


def main_strategy(method: str) -> str:
  """The training strategy of the main runs: epsilon-greedy for DQN's Q values, sampling from
  the policy for the policy-gradient family."""
  return "epsilon" if METHODS[method] == "dqn" else "categorical"


def plan(cfg: PaperConfig, preset: Preset, env_dir: str, env_kind: str = "sequential"
         ) -> list[Task]:
  """Every task, in the order they should start: pre-training first, then seed-major (each
  method's first seed compiles its programs, later seeds load them from the cache)."""
  seeds = range(cfg.seeds)
  tasks, pre = [], {}
  labeler_dir = os.path.join(cfg.workdir, "labels")
  for s in seeds:
    d = pretrain_dir(cfg.workdir, preset, s)
    pre[s] = d
    if d in [t.workdir for t in tasks] or not any(METHODS[m] in PRETRAINED for m in cfg.methods):
      continue
    pcfg = dataclasses.replace(
        preset.pretrain, env=env_dir, seed=s,
        labeler="inproc" if cfg.labeler == "oracle" else "shards",
        labeler_dir="" if cfg.labeler == "oracle" else labeler_dir,
        agent_cfg=dataclasses.replace(preset.pretrain.agent_cfg,
                                      advantage=cfg.pretrain_advantage))
    tasks.append(Task(f"pretrain {os.path.basename(d)}", "pretrain", d, pcfg, seed=s))
  explore = [m for m in preset.explore_methods if m in cfg.methods] if cfg.explore else []
  explore_seeds = preset.explore_seeds or cfg.seeds
  for s in seeds:
    runs = [(m, "") for m in cfg.methods if not skip_reason(cfg, m, env_kind)]
    if s < explore_seeds:
      runs += [(m, st) for m in explore for st in STRATEGIES if st != main_strategy(m)]
    for m, st in runs:
      agent = METHODS[m]
      init = pre[s] if agent in PRETRAINED else ""
      # Exploration runs train with `st` and are tested like the main runs: one evaluation
      # program per method (compiled once), and Figures 10-11 plot the training curves.
      tcfg = dataclasses.replace(preset.train, agent=agent, env=env_dir, seed=s,
                                 explore=st or main_strategy(m),
                                 eval_explore=main_strategy(m) if st else "", init_from=init)
      label = f"explore {m} {st} seed {s}" if st else f"{m} seed {s}"
      tasks.append(Task(label, "train", run_dir(cfg.workdir, m, s, st), tcfg, needs=init,
                        method=m, seed=s, explore=bool(st)))
  return tasks


def skip_reason(cfg: PaperConfig, method: str, env_kind: str) -> str:
  """Why a method cannot run with this labeler and env ("" = it can)."""
  if method != "LLMOnline":
    return ""
  if cfg.labeler != "oracle":
    return ("LLMOnline needs its labeler inside the training loop, and only the simulated "
            "oracle runs there (jaxrec.agents.llm_online); skipped with --labeler="
            f"{cfg.labeler}")
  if env_kind != "sequential":
    return (f"LLMOnline's oracle judges from the history, which a {env_kind} env does not "
            "model (the paper runs RQ3 on the sequential LFM / Industry envs); skipped")
  return ""


# --- the stages ---------------------------------------------------------------------------------
def load_inputs(cfg: PaperConfig, syn: synthetic.SyntheticConfig,
                prep: registry.PrepConfig):
  """(dataset, true matrix, its source record), loaded and checked before anything is written;
  None when the workdir's env is already built (the env directory holds its dataset)."""
  if os.path.isdir(os.path.join(cfg.workdir, "env")):
    return None
  ds = registry.load_dataset(cfg.dataset, cfg.data_dir or None, prep,
                             syn if cfg.dataset == "synthetic" else None)
  true, source = None, None
  if cfg.protocol == "peer":
    true, source = peer.true_matrix_for(ds, cfg.true_matrix or None, syn,
                                        data_dir=cfg.data_dir or None)
  return ds, true, source


def ensure_env(cfg: PaperConfig, preset: Preset, inputs, log) -> str:
  """WORKDIR/env: built from `inputs` (load_inputs), or reused (inputs None)."""
  env_dir = os.path.join(cfg.workdir, "env")
  if inputs is None:
    build.read_meta(env_dir, expect_dataset=cfg.dataset)
    log(f"env: reusing {env_dir}")
    return env_dir
  ds, true, source = inputs
  log(f"env: building {env_dir} from {ds.name} ({ds.num_users} users, {ds.num_items} items, "
      f"protocol {cfg.protocol})")
  build.build_envs(ds, dataclasses.replace(preset.build, protocol=cfg.protocol), env_dir,
                   log=lambda s: log(f"  [env] {s}"), true_matrix=true, true_source=source)
  return env_dir


REFERENCES = "references.json"


def ensure_references(preset: Preset, env_dir: str, workdir: str, log) -> None:
  """WORKDIR/references.json: the reference policies (experiments.references) in the test env,
  FB, on the preset's evaluation sessions: the 0 (random) and 1 (planner) of the tables'
  normalised score. Computed once; a rerun reuses it."""
  path = os.path.join(workdir, REFERENCES)
  if os.path.exists(path):
    return
  from experiments import references
  log("references: random, popularity, greedy, safe_greedy, planner in the test env")
  refs = references.reference_metrics(env_dir, "FB", preset.train.eval_sessions)["FB"]
  atomic_write_text(path, json.dumps(refs, indent=2) + "\n")


def adapter_dir(cfg: PaperConfig) -> str:
  """The LoRA adapter the labeler applies ("" = none): --lora, or --tune's WORKDIR/adapter."""
  return cfg.lora or (os.path.join(cfg.workdir, "adapter") if cfg.tune else "")


def label_steps(cfg: PaperConfig, preset: Preset, env_dir: str) -> list[tuple[str, str, list]]:
  """vllm / hf: the labeling stages as (name, marker that exists once done, command), in order:
  tune (with --tune), sample requests, label, label quality (experiments.label_quality on the
  test split's held-out interactions, with the hf backend on the same model and adapter)."""
  root = os.path.join(cfg.workdir, "labels")
  req, lab = os.path.join(root, "requests"), os.path.join(root, "labels")
  k = preset.pretrain.num_candidates
  adapter = adapter_dir(cfg)
  shown = [f"--lora={adapter}"] if adapter else (
      [f"--history={preset.label_history}"] if preset.label_history else [])
  prompt = [f"--template={cfg.template}"] if cfg.template else []
  steps = []
  if cfg.tune:  # llm_labeler.tune writes --out whole when complete and resumes otherwise
    steps.append(("tune", adapter,
                  [sys.executable, "-m", "llm_labeler.tune", f"--env={env_dir}",
                   f"--model={cfg.model}", f"--out={adapter}", f"--num={preset.tune_examples}",
                   f"--k={k}", f"--history={preset.tune_history}", "--seed=0",
                   *([f"--template={cfg.template}", "--loss=listwise"] if cfg.template
                     else [])]))
  steps += [
      ("sample requests", os.path.join(req, "DONE"),
       [sys.executable, "-m", "jaxrec.sample_requests", f"--env={env_dir}", f"--out={req}",
        f"--num={preset.num_requests}", f"--k={k}", "--seed=0",
        f"--shard_size={preset.request_shard_size}"]),
      ("label", os.path.join(lab, "DONE.paper"),
       [sys.executable, "-m", "llm_labeler.label", f"--requests={req}", f"--out={lab}",
        f"--backend={cfg.labeler}", f"--model={cfg.model}", f"--env={env_dir}", *shown,
        *prompt]),
      ("quality", os.path.join(root, "quality.json"),
       [sys.executable, "-m", "experiments.label_quality", f"--env={env_dir}",
        f"--out={os.path.join(root, 'quality.json')}", "--backend=hf", f"--model={cfg.model}",
        f"--num={preset.quality_num}", f"--k={k}", "--permutations=1", *prompt,
        *([f"--lora={adapter}"] if adapter else
          [f"--history={preset.label_history}"] if preset.label_history else [])]),
  ]
  return steps


def run_stage(cmd: list[str], log) -> tuple[int, str, bool]:
  """Runs one label stage's CLI, its stderr (progress lines, the error) passed to `log` line by
  line as it comes. A SIGTERM to this process is passed on to the stage, which stops at its
  next safe point (a committed shard, a tune checkpoint) and exits 143; without this the stage
  would outlive its launcher. -> (exit status, its last stderr line, whether SIGTERM came)."""
  proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, errors="replace")
  last = "(no output)"
  with Forwarding(lambda: [proc.pid] if proc.poll() is None else []) as forwarding:
    for line in proc.stderr:
      line = line.rstrip()
      if line.strip():
        last = line
        log(f"  {line}")
    proc.wait()
  return proc.returncode, last, forwarding.requested


def ensure_labels(cfg: PaperConfig, preset: Preset, env_dir: str, log) -> dict:
  """vllm / hf: (tuned,) request shards sampled from the train env, labeled by the LLM offline,
  and the label quality of that labeler. -> wall seconds of each stage run now. SIGTERM stops
  the stage in flight at its next safe point (Preempted: exit 143; rerunning resumes)."""
  if cfg.labeler == "oracle":
    log("labels: the simulated oracle judge (jaxrec.oracle, NOT an LLM) labels inside "
        "pre-training")
    return {}
  walls = {}
  for what, marker, cmd in label_steps(cfg, preset, env_dir):
    if os.path.exists(marker):
      log(f"labels: {what}: done before")
      continue
    log(f"labels: {what}: {' '.join(cmd[1:])}")
    t0 = time.perf_counter()
    rc, last, stopped = run_stage(cmd, log)
    if stopped and rc in (PREEMPTED_EXIT, -signal.SIGTERM):
      raise Preempted(f"labels: {what} stopped by SIGTERM; rerun the same command to resume")
    if rc:
      raise DataError(f"{cmd[2]} failed (exit {rc}): {last}")
    if marker.endswith(".paper"):
      atomic_write_text(marker, "")
    walls[what] = time.perf_counter() - t0
  return walls


def _check_same_flags(cfg: PaperConfig, path: str) -> None:
  """A workdir holds one experiment: a rerun must use the flags that shape its results."""
  keys = ("dataset", "labeler", "preset", "model", "protocol", "true_matrix", "lora", "tune",
          "template", "pretrain_advantage")
  if not os.path.isfile(path):
    return
  try:
    old = json.loads(open(path).read())["flags"]
  except (OSError, ValueError, KeyError) as e:
    raise DataError(f"{path}: unreadable ({e})") from None
  for k in keys:
    # a run from before the template / pretrain_advantage flags used their defaults
    was = old.get(k, {"template": "", "pretrain_advantage": "td"}.get(k))
    if was != getattr(cfg, k):
      raise ConfigError(f"--workdir={cfg.workdir} holds a run with --{k}={was}; "
                        f"got --{k}={getattr(cfg, k)} (use another --workdir)")


def run_paper(cfg: PaperConfig, syn: synthetic.SyntheticConfig | None = None,
              prep: registry.PrepConfig = registry.PrepConfig(), log=print) -> dict:
  """The whole pipeline; returns results.json's content."""
  cfg.validate()
  preset = PRESETS[cfg.preset]
  syn = syn or preset.synthetic
  config_path = os.path.join(cfg.workdir, "paper.json")
  _check_same_flags(cfg, config_path)
  inputs = load_inputs(cfg, syn, prep)  # bad --data_dir / --true_matrix: refused before
  # the workdir exists
  os.makedirs(cfg.workdir, exist_ok=True)
  atomic_write_text(config_path, json.dumps(
      {"flags": dataclasses.asdict(cfg), "preset": dataclasses.asdict(preset),
       "synthetic": dataclasses.asdict(syn), "prep": dataclasses.asdict(prep)},
      indent=2) + "\n")
  cache_dir = os.path.join(cfg.workdir, "xla_cache")
  setup_compile_cache(cache_dir)
  t0 = time.perf_counter()
  walls = {}
  env_dir = ensure_env(cfg, preset, inputs, log)
  ensure_references(preset, env_dir, cfg.workdir, log)
  walls["env"] = time.perf_counter() - t0
  t1 = time.perf_counter()
  walls |= {f"labels_{k.replace(' ', '_')}": v
            for k, v in ensure_labels(cfg, preset, env_dir, log).items()}
  walls["labels"] = time.perf_counter() - t1
  env_kind = build.read_meta(env_dir).kind
  skipped = {m: skip_reason(cfg, m, env_kind) for m in cfg.methods
             if skip_reason(cfg, m, env_kind)}
  for m, why in skipped.items():
    log(f"{m}: {why}")
  tasks = plan(cfg, preset, env_dir, env_kind)
  log(f"{len(tasks)} tasks ({cfg.seeds} seeds, preset {cfg.preset}: "
      f"{preset.train.total_steps} env steps per run) on {cfg.num_workers} worker(s)")
  t2 = time.perf_counter()
  run_tasks(tasks, cfg.num_workers, cache_dir, log)
  walls["runs"] = time.perf_counter() - t2
  t3 = time.perf_counter()
  results = paper_report.write_all(cfg.workdir, tasks, cfg, preset, skipped, log)
  walls["report"] = time.perf_counter() - t3
  walls["total"] = time.perf_counter() - t0
  results["wall_s"] |= walls
  paper_report.write_results(cfg.workdir, results)
  log(f"done in {walls['total']:.0f}s (env {walls['env']:.0f}s, labels {walls['labels']:.0f}s, "
      f"runs {walls['runs']:.0f}s, report {walls['report']:.0f}s): "
      f"{os.path.join(cfg.workdir, 'tables.md')}")
  return results


# --- CLI ------------------------------------------------------------------------------------
config.define_flags(PaperConfig)


def config_from_flags() -> PaperConfig:
  return config.from_flags(PaperConfig, dataset=data_flags.DATASET.value,
                           data_dir=data_flags.DATA_DIR.value or "")


def synthetic_from_flags(preset_name: str) -> synthetic.SyntheticConfig:
  """The preset's synthetic dataset, with any --synthetic_* flag given on the command line."""
  base = PRESETS.get(preset_name, PRESETS["default"]).synthetic
  given = {f: getattr(data_flags, v).value for f, v, name in (
      ("num_users", "SYN_USERS", "synthetic_users"), ("num_items", "SYN_ITEMS", "synthetic_items"),
      ("num_genres", "SYN_GENRES", "synthetic_genres"),
      ("mean_length", "SYN_LENGTH", "synthetic_mean_length"), ("seed", "DATA_SEED", "data_seed"))
      if flags.FLAGS[name].present}
  return dataclasses.replace(base, **given)


def main(argv):
  cli.reject_extra_args(argv)
  cfg = config_from_flags()
  run_paper(cfg, synthetic_from_flags(cfg.preset), data_flags.prep_config_from_flags())


if __name__ == "__main__":
  cli.run(main)
