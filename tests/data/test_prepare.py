"""`python -m jaxrec.data.prepare` end to end, in subprocesses (one success, three failures run
side by side)."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from jaxrec.data import Dataset, PrepConfig, SyntheticConfig, load_dataset

REPO = pathlib.Path(__file__).resolve().parents[2]
SMALL_FLAGS = ["--synthetic_users=200", "--synthetic_items=100", "--data_seed=3"]
ARRAY_FIELDS = ("item_text", "item_keys", "user_keys", "seq_items", "offsets", "ratings", "times",
                "item_features", "user_features")


def start(args: list[str], cwd: pathlib.Path) -> subprocess.Popen:
  env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
  return subprocess.Popen([sys.executable, "-m", "jaxrec.data.prepare", *args], cwd=cwd, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
  out, err = proc.communicate(timeout=120)
  return proc.returncode, out, err


def test_prepare_writes_cache_and_stats(tmp_path):
  out = tmp_path / "out"
  code, stdout, stderr = finish(start([f"--out={out}", *SMALL_FLAGS], tmp_path))
  assert code == 0, stderr
  assert sorted(os.listdir(out)) == ["dataset.npz", "stats.json"]
  ds = Dataset.load(str(out / "dataset.npz"))
  # The flags reach the generator and the default k-core filter (min 3 each).
  expected = load_dataset("synthetic", prep=PrepConfig(),
                          synthetic_cfg=SyntheticConfig(num_users=200, num_items=100, seed=3))
  for f in ARRAY_FIELDS:
    np.testing.assert_array_equal(getattr(ds, f), getattr(expected, f), err_msg=f)
  lines = stdout.strip().splitlines()
  assert lines == [
      "| Dataset | #item | #seq./user | #inter. | Item attribute |",
      "|---|---:|---:|---:|---|",
      f"| synthetic | {ds.num_items:,} | {ds.num_users:,} | {ds.num_interactions:,} "
      "| title; genre; label |",
      f"wrote {out / 'dataset.npz'}",
  ]
  stats = json.loads((out / "stats.json").read_text())
  assert stats == ds.stats() | {"mean_length": pytest.approx(ds.lengths.mean()),
                                "has_ratings": True, "has_times": True}


def test_prepare_failures_are_one_line_and_write_nothing(tmp_path):
  cases = {
      "unknown dataset": (["--dataset=nope", f"--out={tmp_path / 'a' / 'out'}"],
                          "error: unknown dataset 'nope'; expected one of synthetic, "),
      "missing --out": (SMALL_FLAGS, "error: --out is required"),
      "positional argument": ([f"--out={tmp_path / 'c' / 'out'}", "extra"],
                              "error: unexpected positional arguments ['extra']"),
  }
  procs = {}
  for i, (name, (args, _)) in enumerate(cases.items()):
    cwd = tmp_path / "abc"[i]
    cwd.mkdir()
    procs[name] = (start(args, cwd), cwd)
  for name, (proc, cwd) in procs.items():
    code, stdout, stderr = finish(proc)
    assert code != 0, name
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(cases[name][1]), (name, stderr)
    assert stdout == "", name
    assert os.listdir(cwd) == [], name  # no out directory, nothing in the working directory
