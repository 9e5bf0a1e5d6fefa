"""The outputs of experiments.paper, from the run directories alone (a report can be rebuilt
without training): results.json, tables.md (paper Tables 3-5 + the exploration comparison) and
the figures (paper Figures 6-11) as PNG.

results.json
  methods.<name>.{R@0, Len@0, Ravg@0, R@1, Len@1, Ravg@1, R, Len, Ravg}   lists over seeds
                 + {Norm@0, Norm} where references.json exists: (R - R_random) /
                 (R_planner - R_random), 0 = random, 1 = the planner
  references.<policy>.{R, Len, Ravg, ...}   the reference policies (experiments.references)
  exploration.<name>.<strategy>.{R, Len, Ravg}                           lists over seeds
  seeds, config (flags + preset), pretrain (its last test row), skipped,
  tasks.<label>.{wall_s, cpu_s, trace_s, lower_s, compile_s}   per run (its last session)
  wall_s.{env, labels, runs, report, total}                    this session's stages
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

from experiments import label_quality
from jaxrec.io import atomic_write_text, read_json_object
from jaxrec.io import read_jsonl as _read_jsonl

KEYS = ("R@0", "Len@0", "Ravg@0", "R@1", "Len@1", "Ravg@1", "R", "Len", "Ravg")
FIGURES = "figures"
ORACLE_NOTE = ("oracle = a simulated judge on the train env's user model (jaxrec.oracle), a "
               "stand-in for the LLM; not an LLM")


def read_jsonl(path: str) -> list[dict]:
  return _read_jsonl(path, "run log")


def run_summary(rows: list[dict]) -> dict:
  """metrics.jsonl rows (epoch 0 first) -> the paper's R@0 ... Ravg (Sec. 5.3): epoch 0,
  epoch 1 and the last epoch."""
  if len(rows) < 2 or rows[0]["epoch"] != 0 or rows[1]["epoch"] != 1:
    raise ValueError(f"need the rows of epochs 0 and 1 first, got epochs "
                     f"{[r['epoch'] for r in rows[:2]]}")
  out = {}
  for suffix, row in (("@0", rows[0]), ("@1", rows[1]), ("", rows[-1])):
    out |= {f"R{suffix}": row["R"], f"Len{suffix}": row["Len"], f"Ravg{suffix}": row["Ravg"]}
  return out


def mean_std(values: list[float]) -> tuple[float, float]:
  """Mean and sample standard deviation (ddof=1; 0 for one seed)."""
  a = np.asarray(values, np.float64)
  return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def exploration_runs(tasks) -> dict:
  """{strategy: {method: [train tasks]}} of the exploration comparison: a method's extra runs
  plus, for the same seeds, its main runs (which supply the main strategy)."""
  seeds = {}
  for t in tasks:
    if t.kind == "train" and t.explore:
      seeds.setdefault(t.method, set()).add(t.seed)
  out = {}
  for t in tasks:
    if t.kind == "train" and t.method in seeds and t.seed in seeds[t.method]:
      out.setdefault(t.cfg.explore, {}).setdefault(t.method, []).append(t)
  return out


def collect(tasks, skipped: dict) -> dict:
  """results.json's methods / exploration / pretrain / wall_s parts, from the finished runs."""
  methods, exploration, pretrain, times = {}, {}, {}, {}
  for t in tasks:
    done = os.path.join(t.workdir, "done.json")
    if os.path.isfile(done):
      times[t.label] = {k: v for k, v in read_json_object(done, "task record").items()
                       if k != "label"}
    if t.kind == "pretrain":
      pretrain[t.label] = read_jsonl(os.path.join(t.workdir, "metrics.jsonl"))[-1]
    elif not t.explore:
      entry = methods.setdefault(t.method, {k: [] for k in KEYS})
      for k, v in run_summary(read_jsonl(os.path.join(t.workdir, "metrics.jsonl"))).items():
        entry[k].append(v)
  for strategy, by_method in exploration_runs(tasks).items():
    for method, runs in by_method.items():
      last = [read_jsonl(os.path.join(t.workdir, "metrics.jsonl"))[-1] for t in runs]
      exploration.setdefault(method, {})[strategy] = {
          k: [row[k] for row in last] for k in ("R", "Len", "Ravg")}
  return {"methods": methods, "exploration": exploration, "pretrain": pretrain,
          "skipped": skipped, "tasks": times, "wall_s": {}}


# --- tables.md ----------------------------------------------------------------------------------
def _cell(values: list[float], digits: int = 2) -> str:
  m, s = mean_std(values)
  return f"{m:.{digits}f} ± {s:.{digits}f}" if len(values) > 1 else f"{m:.{digits}f}"


def _digits(key: str) -> int:
  return 3 if key.startswith("Norm") else 2  # normalised scores near 0 need the third


def _bold_best(cells: list[str], means: list[float]) -> list[str]:
  if not means:
    return cells
  best = max(means)
  return [f"**{c}**" if math.isclose(m, best) else c for c, m in zip(cells, means)]


def table_epoch(methods: dict, epoch: str, title: str) -> str:
  """Paper Tables 3 and 4: one row per method, R / Len / Ravg at epoch 0 or 1."""
  keys = [f"R{epoch}", f"Len{epoch}", f"Ravg{epoch}"]
  names = list(methods)
  keys += [f"Norm{epoch}"] if names and f"Norm{epoch}" in methods[names[0]] else []
  cols = {k: _bold_best([_cell(methods[n][k], _digits(k)) for n in names],
                        [mean_std(methods[n][k])[0] for n in names]) for k in keys}
  lines = [title, "", "| Method | " + " | ".join(keys) + " |",
           "|---|" + "---|" * len(keys)]
  lines += [f"| {n} | " + " | ".join(cols[k][i] for k in keys) + " |"
            for i, n in enumerate(names)]
  return "\n".join(lines) + "\n"


def table_final(methods: dict, title: str) -> str:
  """Paper Table 5: methods as columns, R / Len / Ravg after the whole budget as rows."""
  names = list(methods)
  lines = [title, "", "| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
  for k in ("R", "Len", "Ravg") + (("Norm",) if names and "Norm" in methods[names[0]] else ()):
    cells = _bold_best([_cell(methods[n][k], _digits(k)) for n in names],
                       [mean_std(methods[n][k])[0] for n in names])
    lines.append(f"| {k} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def table_references(refs: dict) -> str:
  """The reference policies in the test env (FB): the scale of the Norm rows."""
  lines = ["## Reference policies (test env, FB; Norm: 0 = random, 1 = planner)", "",
           "NAME@train: the train env's policy acting in the test env (what a learner that is "
           "perfect in the env it learns in would earn).", "",
           "| Policy | R | Len | Ravg | quit similar | quit low reward | Norm |",
           "|---|---|---|---|---|---|---|"]
  lines += [f"| {name} | {r['R']:.2f} | {r['Len']:.2f} | {r['Ravg']:.2f} | "
            f"{r['quit_similar']:.2f} | {r['quit_low_reward']:.2f} | {r['normalised']:.3f} |"
            for name, r in refs.items()]
  return "\n".join(lines) + "\n"


def table_exploration(exploration: dict, title: str) -> str:
  strategies = ("greedy", "epsilon", "categorical")
  lines = [title, "", "| Method | " + " | ".join(f"R ({s})" for s in strategies) + " | "
           + " | ".join(f"Len ({s})" for s in strategies) + " |",
           "|---|" + "---|" * (2 * len(strategies))]
  for name, by in exploration.items():
    cells = [_cell(by[s][k]) if s in by else "n/a" for k in ("R", "Len") for s in strategies]
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def tables_markdown(results: dict) -> str:
  cfg = results["config"]
  flags, train = cfg["flags"], cfg["preset"]["train"]
  n = len(results["seeds"])
  labeler = ORACLE_NOTE if flags["labeler"] == "oracle" else f"{flags['labeler']} ({flags['model']})"
  head = [
      f"# Paper tables: dataset {flags['dataset']}, preset {flags['preset']}",
      "",
      f"Mean ± sample std (ddof=1) over {n} seed(s) {results['seeds']}. Every method: "
      f"{train['total_steps']:,} env steps in the train env ({train['num_sessions']} sessions), "
      f"evaluated in the test env on {train['eval_sessions']} sessions per epoch of "
      f"{train['steps_per_epoch']:,} steps. Labeler: {labeler}. Bold: the highest mean.",
      "",
  ]
  methods = results["methods"]
  parts = [table_epoch(methods, "@0", "## Table 3: initial performance (epoch 0)"),
           table_epoch(methods, "@1", "## Table 4: after one epoch (epoch 1)"),
           table_final(methods, "## Table 5: after the whole budget")]
  if results["exploration"]:
    parts.append(table_exploration(
        results["exploration"], "## Exploration strategies (Figures 10-11): trained with each "
        "strategy for the whole budget, tested like the main runs (sampling from the policy); "
        f"{min(len(v['R']) for by in results['exploration'].values() for v in by.values())} "
        "seed(s) per cell"))
  if "references" in results:
    parts.append(table_references(results["references"]))
  if "label_quality" in results:
    q = results["label_quality"]
    parts.append(f"## Label quality: the labeler on {q.get('num')} held-out test-split "
                 f"interactions, k = {q.get('k')} (experiments.label_quality)\n\n"
                 + label_quality.table(q))
  for name, why in results.get("skipped", {}).items():
    parts.append(f"{name}: {why}\n")
  return "\n".join(head) + "\n" + "\n".join(parts)


# --- figures ----------------------------------------------------------------------------------
def _curves(workdir_of_seed: list[str]):
  """-> (env_steps [P], return [S, P], length [S, P]) of one method's seeds (same grid)."""
  runs = [read_jsonl(os.path.join(d, "curve.jsonl")) for d in workdir_of_seed]
  p = min(len(r) for r in runs)
  steps = np.asarray([row["env_steps"] for row in runs[0][:p]])
  ret = np.asarray([[row["curve_return"] for row in r[:p]] for r in runs])
  length = np.asarray([[row["curve_length"] for row in r[:p]] for r in runs])
  # Before the first episode ends the window is empty (the loop reports 0): not a return.
  start = int(np.argmax((length > 0).all(axis=0))) if (length > 0).any() else p
  return steps[start:], ret[:, start:], length[:, start:]


def _plot_methods(ax_ret, ax_len, series: dict, warmup: int) -> None:
  """Mean over seeds +- std (shaded). Before `warmup` env steps (sessions x max_len) the window
  of the last 20 finished episodes holds the first, hence shortest, episodes: not learning."""
  for name, dirs in series.items():
    steps, ret, length = _curves(dirs)
    for ax, y in ((ax_ret, ret), (ax_len, length)):
      m, s = y.mean(axis=0), y.std(axis=0)
      ax.plot(steps, m, label=name, marker="o" if len(steps) < 10 else None, markersize=3)
      ax.fill_between(steps, m - s, m + s, alpha=0.2)
  for ax, what in ((ax_ret, "return"), (ax_len, "length")):
    ax.axvline(warmup, color="gray", linestyle=":", linewidth=1,
               label="sessions x max_len: before it, only short episodes have ended")
    ax.set_xlabel("env steps")
    ax.set_ylabel(f"train episode {what} (last 20)")
    ax.grid(alpha=0.3)


def write_figures(workdir: str, tasks, log) -> list[str]:
  """Figures 6-9 (learning curves) and 10-11 (exploration strategies); [] without matplotlib."""
  try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
  except ImportError:
    log("figures: skipped (matplotlib is not installed: pip install -e '.[plots]')")
    return []
  from jaxrec.envs import build
  train = [t for t in tasks if t.kind == "train"]
  if not train:
    return []
  warmup = train[0].cfg.num_sessions * build.read_meta(train[0].cfg.env).max_len
  main = {}
  for t in tasks:
    if t.kind == "train" and not t.explore:
      main.setdefault(t.method, []).append(t.workdir)
  explore = {s: {m: [t.workdir for t in runs] for m, runs in by.items()}
             for s, by in exploration_runs(tasks).items()}
  out_dir = os.path.join(workdir, FIGURES)
  os.makedirs(out_dir, exist_ok=True)
  written = []

  def save(fig, name):
    path = os.path.join(out_dir, name)
    handles, labels = fig.axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.03 + 0.035 * math.ceil(len(labels) / 4), 1, 1))
    fig.savefig(path + ".tmp.png", dpi=110)
    os.replace(path + ".tmp.png", path)
    plt.close(fig)
    written.append(path)

  groups = [("fig6_7_learning_curves.png", "Baselines vs A-iALP (paper Figures 6-7)",
             [m for m in main if m != "LLMOnline"]),
            ("fig8_9_llm_online.png", "LLMOnline vs A-iALP (paper Figures 8-9)",
             [m for m in ("LLMOnline", "A-iALP_ft", "A-iALP_ap") if m in main])]
  for name, title, names in groups:
    if not names or (name.startswith("fig8") and "LLMOnline" not in names):
      continue
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    _plot_methods(a, b, {m: main[m] for m in names}, warmup)
    fig.suptitle(title)
    save(fig, name)
  if explore:
    strategies = [s for s in ("greedy", "epsilon", "categorical") if s in explore]
    fig, axes = plt.subplots(2, len(strategies), figsize=(4.5 * len(strategies), 7),
                             squeeze=False)
    for j, s in enumerate(strategies):
      _plot_methods(axes[0, j], axes[1, j], explore[s], warmup)
      axes[0, j].set_title(s)
    fig.suptitle("Exploration strategies (paper Figures 10-11)")
    save(fig, "fig10_11_exploration.png")
  log(f"figures: {', '.join(os.path.basename(p) for p in written)}")
  return written


# --- all of it ----------------------------------------------------------------------------------
def write_results(workdir: str, results: dict) -> None:
  atomic_write_text(os.path.join(workdir, "results.json"), json.dumps(results, indent=2) + "\n")


def add_normalised(results: dict, references: dict) -> dict:
  """results with references and each method's Norm@0 / Norm (lists over seeds)."""
  from experiments.references import normalised_score
  lo, hi = references["random"]["R"], references["planner"]["R"]
  methods = {name: entry | {"Norm@0": [normalised_score(r, lo, hi) for r in entry["R@0"]],
                            "Norm": [normalised_score(r, lo, hi) for r in entry["R"]]}
             for name, entry in results["methods"].items()}
  return results | {"methods": methods, "references": references}


def write_all(workdir: str, tasks, cfg, preset, skipped: dict, log) -> dict:
  """results.json + tables.md + figures from the finished run directories (and the reference
  policies' normalised scores where WORKDIR/references.json exists)."""
  import dataclasses
  results = collect(tasks, skipped)
  refs_path = os.path.join(workdir, "references.json")
  if os.path.isfile(refs_path):
    results = add_normalised(results, read_json_object(refs_path, "reference metrics"))
  results = {"seeds": list(range(cfg.seeds)),
             "config": {"flags": dataclasses.asdict(cfg), "preset": dataclasses.asdict(preset)},
             "labeler": ORACLE_NOTE if cfg.labeler == "oracle" else cfg.labeler} | results
  quality_path = os.path.join(workdir, "labels", "quality.json")
  if os.path.isfile(quality_path):  # vllm / hf: the labeler's quality (experiments.label_quality)
    quality = read_json_object(quality_path, "label quality")
    results["label_quality"] = {k: quality[k] for k in ("rows", "k", "num") if k in quality}
  write_results(workdir, results)
  atomic_write_text(os.path.join(workdir, "tables.md"), tables_markdown(results))
  results["figures"] = [os.path.relpath(p, workdir) for p in write_figures(workdir, tasks, log)]
  return results
