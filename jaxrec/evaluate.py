"""python -m jaxrec.evaluate --export=DIR --env=ENV_DIR [--sessions=N --seed=K
    --strategy=greedy|epsilon|categorical --which=test|train --eval_mode=FB|NX_0|NX_10
    --out=FILE.json]

Evaluates an export (python -m jaxrec.export) in the test env of ENV_DIR using only the export:
its deserialized act() drives one episode in each of N fresh sessions, and the paper's metrics
(Sec. 5.3: Return R, Length Len, average reward Ravg, and R_std) are printed as JSON and
written to --out. The env must be built from the dataset the policy was trained on (same
fingerprint and item count). Same flags -> same numbers.
"""

from __future__ import annotations


import jax
from absl import flags

from jaxrec import cli
from jaxrec.agents.types import STRATEGIES
from jaxrec.errors import ConfigError
from jaxrec.export import evaluate_export
from jaxrec.train.evaluation import parse_mode

EXPORT = flags.DEFINE_string("export", None, "export directory from python -m jaxrec.export")
ENV = flags.DEFINE_string("env", None, "env directory from experiments.build_envs")
SESSIONS = flags.DEFINE_integer("sessions", 1024, "test episodes (one per fresh session)")
SEED = flags.DEFINE_integer("seed", 0, "evaluation key: jax.random.PRNGKey(seed)")
STRATEGY = flags.DEFINE_string("strategy", None,
                               f"one of {', '.join(STRATEGIES)} (default: the run's)")
WHICH = flags.DEFINE_enum("which", "test", ["test", "train"], "which env of --env")
OUT = flags.DEFINE_string("out", None, "also write the metrics JSON here")
MODE = flags.DEFINE_string("eval_mode", "FB", "FB | NX_0 | NX_<k> (jaxrec.train.evaluation)")


def main(argv):
  cli.reject_extra_args(argv)
  if not EXPORT.value:
    raise ConfigError("--export is required (a directory from python -m jaxrec.export)")
  if not ENV.value:
    raise ConfigError("--env is required (a directory from experiments.build_envs)")
  parse_mode(MODE.value)
  metrics = evaluate_export(EXPORT.value, ENV.value, SESSIONS.value,
                            jax.random.PRNGKey(SEED.value), STRATEGY.value, WHICH.value,
                            MODE.value)
  metrics |= {"seed": SEED.value, "export": EXPORT.value, "env_dir": ENV.value}
  cli.emit_json(metrics, OUT.value)


if __name__ == "__main__":
  cli.run(main)
