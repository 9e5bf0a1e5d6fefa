"""The launchers on corrupted input: exit status 2, `error: <one line>` as the last line of
stderr, no Python traceback, and no output written. Three subprocesses, started together."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from data.conftest import ML_RATINGS, write_lines
from jaxrec import shards

from .util import copy_of, files_under

REQUEST_META = {"dataset": "best_item", "fingerprint": "0" * 16, "k": 3, "history_len": 4,
                "num_items": 20}


def _flip(path: str, offset: int) -> None:
  data = bytearray(pathlib.Path(path).read_bytes())
  data[offset % len(data)] ^= 0xFF
  pathlib.Path(path).write_bytes(bytes(data))


@pytest.fixture(scope="module")
def runs(tmp_path_factory, fuzz_matrix_env_dir):
  """name -> (Popen, the directory that must stay without output)."""
  root = tmp_path_factory.mktemp("cli")
  # A request directory whose only shard has one byte flipped.
  req, out = str(root / "requests"), str(root / "labels")
  rng = np.random.default_rng(0)
  shards.write_requests(req, "requests-00000", shards.RequestShard(
      session=np.arange(4, dtype=np.int32), step=np.zeros(4, np.int32),
      history=rng.integers(-1, 20, (4, 4)).astype(np.int32),
      candidates=rng.integers(0, 20, (4, 3)).astype(np.int32),
      user=np.zeros(4, np.int32)), REQUEST_META)
  _flip(os.path.join(req, "requests-00000.npz"), 200)
  # An env directory whose train/env.json is cut in half.
  env = str(root / "env")
  with copy_of(fuzz_matrix_env_dir) as src:
    os.rename(src, env)
  static = pathlib.Path(env, "train", "env.json")
  static.write_bytes(static.read_bytes()[:len(static.read_bytes()) // 2])
  workdir = str(root / "run")
  # An ml-1m directory with a non-UTF-8, non-numeric rating line.
  ml = root / "ml-1m"
  write_lines(ml / "ratings.dat", ["::".join(map(str, r)) for r in ML_RATINGS])
  write_lines(ml / "movies.dat", ["10::Toy Story (1995)::Animation"])
  (ml / "ratings.dat").write_bytes((ml / "ratings.dat").read_bytes() + b"1::2::\xff::4\n")
  prepared = str(root / "prepared")
  commands = {
      "label": (["-mllm_labeler.label", f"--requests={req}", f"--out={out}",
                 "--backend=oracle", f"--env={fuzz_matrix_env_dir}"], out),
      "train": (["-mjaxrec.train", f"--env={env}", f"--workdir={workdir}", "--agent=a2c",
                 "--num_sessions=4", "--total_steps=8", "--steps_per_epoch=4",
                 "--eval_sessions=4"], workdir),
      "prepare": (["-mjaxrec.data.prepare", "--dataset=movielens", f"--data_dir={ml}",
                   f"--out={prepared}"], prepared),
  }
  procs = {name: (subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True), watched)
           for name, (args, watched) in commands.items()}
  yield procs
  for proc, _ in procs.values():
    if proc.poll() is None:
      proc.kill()
      proc.wait()


@pytest.mark.parametrize("name, says", [
    ("label", "requests-00000.npz: shard 'requests-00000' does not match the sha256"),
    ("train", "train/env.json: unreadable"),
    ("prepare", "ratings.dat:6: field Rating: expected an integer"),
])
def test_cli_refuses_corrupted_input_in_one_line_and_writes_nothing(runs, name, says):
  proc, watched = runs[name]
  _, stderr = proc.communicate(timeout=300)
  assert proc.returncode == 2, stderr[-2000:]
  assert "Traceback" not in stderr, stderr[-2000:]
  last = stderr.rstrip("\n").splitlines()[-1]
  assert last.startswith("error: ") and says in last, last
  written = files_under(watched) if os.path.isdir(watched) else []
  assert not [f for f in written if f.endswith((".npz", ".json")) or "checkpoint" in f], written
