"""python -m experiments.fault_drill --workdir=DIR [--drills=NAME,...] [--seed=0]

Kill/restart drills on the real CLIs (each job a subprocess, as on a preempted host):

  train_*     python -m jaxrec.train (a2c, dqn, ialp_ap from a pre-training run) and
  pretrain_*  python -m jaxrec.pretrain (iALP, in-process oracle) are killed with SIGKILL at
              a random moment or at a failpoint (jaxrec.faults: inside an orbax checkpoint save,
              while the policy is written), or sent SIGTERM (they must exit 143 with the
              checkpoint of the epoch they were in saved); then the same command is rerun until
              it exits 0. The final loop state (params, optimizer, replay buffer, env states,
              key) must equal an uninterrupted run's bit for bit, and metrics.jsonl /
              curve.jsonl too (wall-clock columns aside).
  offline_*   python -m jaxrec.offline (SA2C on a small synthetic dataset, the warm-up ending
              mid-run) the same way: killed at random or inside a checkpoint save, or sent
              SIGTERM; its final state (both copies' params, both Adam states, update count),
              metrics.jsonl and results.json must equal an uninterrupted run's.
  label_*     python -m llm_labeler.label (oracle backend) over request shards is killed at each
              shard-commit failpoint (temp written, npz renamed, record written, manifest temp)
              and at random, with one or two workers sharing --out; rerun until it exits 0.
              Every request shard must be labeled exactly once (lost_labels counts request rows
              without a label, duplicate_labels label commits beyond the first), the labels must
              equal an uninterrupted run's, manifest.json must list exactly the verified shards,
              and no temporary file may be left.
  pipeline_*  jaxrec.pretrain --labeler=dir and llm_labeler.label --follow together (lockstep
              through a shard directory), both killed at random or at shard commits; checked
              as pretrain_* (policy, metrics) and label_* (labels, manifest, temp files).

Prints one JSON object: drills, passed, lost_labels, duplicate_labels, resume_mismatches,
seconds, and per drill its kills, reruns and findings; also written to DIR/fault_drill.json.
Exit status 0 iff every drill passed. Everything runs on CPU in a few minutes; DIR keeps the
env, the reference runs and each drill's run directory and log for inspection (a rerun of the
program reuses the env and the references).
"""

from __future__ import annotations

import json
import sys

from absl import flags

from experiments.drills import DRILL_LIST, run_drills
from jaxrec import cli
from jaxrec.errors import ConfigError

WORKDIR = flags.DEFINE_string("workdir", None, "drill directory (created; reused)")
DRILLS = flags.DEFINE_list("drills", [], "drills to run (default: all); see --list")
LIST = flags.DEFINE_bool("list", False, "print the drill names and exit")
SEED = flags.DEFINE_integer("seed", 0, "seed of the random kill times")
MAX_RERUNS = flags.DEFINE_integer("max_reruns", 4, "reruns of a killed job before giving up")


def main(argv):
  cli.reject_extra_args(argv)
  if LIST.value:
    for d in DRILL_LIST:
      print(d.name)
    return
  if not WORKDIR.value:
    raise ConfigError("--workdir is required")
  if MAX_RERUNS.value < 1:
    raise ConfigError(f"--max_reruns must be >= 1, got {MAX_RERUNS.value}")
  summary = run_drills(WORKDIR.value, DRILLS.value, SEED.value, MAX_RERUNS.value,
                       log=lambda s: print(s, file=sys.stderr))
  print(json.dumps({k: v for k, v in summary.items() if k != "results"}))
  sys.exit(0 if summary["passed"] == summary["drills"] else 1)


if __name__ == "__main__":
  cli.run(main)
