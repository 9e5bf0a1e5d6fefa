"""python -m jaxrec.data.prepare --dataset=NAME [--data_dir=PATH] --out=DIR

Loads and preprocesses a dataset, writes DIR/dataset.npz (the cache every later stage reads)
and DIR/stats.json, and prints the statistics table of paper Table 2.
"""

from __future__ import annotations

import json
import os

from absl import flags

from jaxrec import cli
from jaxrec.data import flags as data_flags
from jaxrec.data.dataset import Dataset
from jaxrec.io import atomic_write_text
from jaxrec.errors import ConfigError

OUT = flags.DEFINE_string("out", None, "output directory for dataset.npz and stats.json")

CACHE_NAME = "dataset.npz"


def stats_table(ds: Dataset) -> str:
  s = ds.stats()
  header = "| Dataset | #item | #seq./user | #inter. | Item attribute |"
  rule = "|---|---:|---:|---:|---|"
  row = (f"| {s['dataset']} | {s['items']:,} | {s['sequences']:,} | {s['interactions']:,} "
         f"| {s['attributes']} |")
  return "\n".join([header, rule, row])


def prepare(ds: Dataset, out: str) -> str:
  """Writes the cache and stats into `out`; returns the cache path."""
  path = os.path.join(out, CACHE_NAME)
  ds.save(path)
  stats = ds.stats() | {"mean_length": float(ds.lengths.mean()),
                        "has_ratings": ds.has_ratings, "has_times": ds.has_times}
  atomic_write_text(os.path.join(out, "stats.json"), json.dumps(stats, indent=2) + "\n")
  return path


def main(argv):
  cli.reject_extra_args(argv)
  if not OUT.value:
    raise ConfigError("--out is required (directory for dataset.npz)")
  ds = data_flags.dataset_from_flags()  # raises before anything is written
  path = prepare(ds, OUT.value)
  print(stats_table(ds))
  print(f"wrote {path}")


if __name__ == "__main__":
  cli.run(main)
