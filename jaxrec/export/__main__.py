"""python -m jaxrec.export --workdir=RUN --out=DIR [--step=E] [--env=ENV_DIR]

Writes the policy of a training run (its latest epoch checkpoint, or --step) as a
self-contained export directory: params, config and a jax.export-serialized act() per
exploration strategy (layout: jaxrec/export/__init__.py). Evaluate it with
python -m jaxrec.evaluate --export=DIR --env=ENV_DIR.
"""

from __future__ import annotations

from absl import flags

from jaxrec import cli
from jaxrec.errors import ConfigError
from jaxrec.export import export_run

WORKDIR = flags.DEFINE_string("workdir", None, "run directory of jaxrec.train / experiments.paper")
OUT = flags.DEFINE_string("out", None, "export directory to create (must not exist)")
STEP = flags.DEFINE_integer("step", None, "epoch checkpoint to export (default: the latest)")
ENV = flags.DEFINE_string("env", None, "env directory, if it moved since training")


def main(argv):
  cli.reject_extra_args(argv)
  if not WORKDIR.value:
    raise ConfigError("--workdir is required (a training run directory)")
  if not OUT.value:
    raise ConfigError("--out is required (the export directory to create)")
  export_run(WORKDIR.value, OUT.value, STEP.value, ENV.value)


if __name__ == "__main__":
  cli.run(main)
