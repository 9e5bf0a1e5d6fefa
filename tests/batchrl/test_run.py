"""jaxrec.batchrl end to end on a tiny peer-protocol env: each learner trains and is evaluated in
the true env's three modes, a resumed run equals an uninterrupted one, the NaN guard, and the
CLI's refusals (one line, exit 2, nothing written)."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from jaxrec.batchrl.run import BatchConfig, train_and_evaluate
from jaxrec.data import registry
from jaxrec.data.synthetic import SyntheticConfig
from jaxrec.envs import build, peer
from jaxrec.errors import DataError, NonFiniteError


def quiet(line):
  del line


# One evaluation mode, except where the modes are the point: each mode is its own compile.
TINY = {"epochs": 3, "updates_per_epoch": 20, "batch_size": 16, "eval_sessions": 16,
        "target_period": 8, "num_quantiles": 4, "eval_mode": "FB"}


@pytest.fixture(scope="module")
def env_dirs(tmp_path_factory):
  root = tmp_path_factory.mktemp("batchrl")
  syn = SyntheticConfig(num_users=30, num_items=20, num_genres=3, mean_length=8)
  ds = registry.load_dataset("synthetic", None, registry.PrepConfig(), syn)
  true, source = peer.true_matrix_for(ds, None, syn)
  dirs = {"peer": str(root / "peer"), "paper": str(root / "paper")}
  build.build_envs(ds, build.BuildConfig(protocol="peer", mf_steps=200), dirs["peer"], quiet,
                   true, source)
  # The same directory marked as the paper protocol's (what the refusal reads).
  shutil.copytree(dirs["peer"], dirs["paper"])
  with open(os.path.join(dirs["paper"], "env.json")) as f:
    meta = json.load(f)
  with open(os.path.join(dirs["paper"], "env.json"), "w") as f:
    json.dump(meta | {"protocol": "paper"}, f)
  return dirs


def rows_of(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  for r in rows:
    r.pop("updates_per_s", None)
  return rows


def config(env, **kw):
  return BatchConfig(env=env, **(TINY | kw))


# bcq in the default suite (with the three modes); cql, crr and sqn in the slow one (pytest -m
# slow): the default suite sits near its 10-minute limit on 2 cores.
@pytest.mark.parametrize("agent", ["bcq", pytest.param("cql", marks=pytest.mark.slow),
                                   pytest.param("crr", marks=pytest.mark.slow),
                                   pytest.param("sqn", marks=pytest.mark.slow)])
def test_each_learner_runs_and_reports_the_modes(env_dirs, agent, tmp_path):
  modes = "FB,NX_0,NX_10" if agent == "bcq" else "FB"
  rows = train_and_evaluate(config(env_dirs["peer"], agent=agent, eval_mode=modes),
                            str(tmp_path / agent), quiet)
  assert [r["epoch"] for r in rows] == [0, 1, 2, 3]
  assert rows[-1]["updates"] == 60
  assert np.isfinite(rows[-1]["R"]) and rows[-1]["Len"] >= 1
  assert np.isfinite(rows[-1]["loss"])
  results = json.loads((tmp_path / agent / "results.json").read_text())
  assert set(results["modes"]) == set(modes.split(","))
  assert results["modes"]["FB"]["last"]["R"] == rows[-1]["R"]
  if agent == "bcq":
    assert np.isfinite(rows[-1]["NX_0_R"]) and all(r["NX_10_Len"] == 10.0 for r in rows)
    # the last quarter of 3 epochs is the last one
    assert results["modes"]["NX_0"]["last_quarter"]["R"] == rows[-1]["NX_0_R"]
  assert results["modes"]["FB"]["random"]["Len"] > 0
  assert results["buffer"]["episodes"] >= 30  # every user ends at least one episode


def test_resume_equals_uninterrupted(env_dirs, tmp_path):
  full = config(env_dirs["peer"], agent="bcq")
  train_and_evaluate(full, str(tmp_path / "full"), quiet)
  train_and_evaluate(dataclasses.replace(full, epochs=1), str(tmp_path / "resumed"), quiet)
  train_and_evaluate(full, str(tmp_path / "resumed"), quiet)
  assert rows_of(tmp_path / "resumed") == rows_of(tmp_path / "full")
  # the same seed twice: the same numbers
  assert rows_of(tmp_path / "full")[-1]["R"] == rows_of(tmp_path / "resumed")[-1]["R"]


def test_nan_epoch_is_refused_and_not_saved(env_dirs, tmp_path):
  cfg = config(env_dirs["peer"], agent="crr", learning_rate=1e38)
  with pytest.raises(NonFiniteError, match=r"at update \d+ \(update \d+ of epoch 1\)"):
    train_and_evaluate(cfg, str(tmp_path / "run"), quiet)
  assert os.listdir(tmp_path / "run" / "checkpoints") == []


def test_a_paper_protocol_env_is_refused(env_dirs, tmp_path):
  with pytest.raises(DataError, match="--protocol=peer"):
    train_and_evaluate(config(env_dirs["paper"]), str(tmp_path / "run"), quiet)
  assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flags,message", [
    (["--agent=bcq", "--num_quantiles=5"], "--num_quantiles does not apply to --agent=bcq"),
    (["--agent=crr", "--n_step=2", "--unlikely_threshold=0.3"],
     "--n_step, --unlikely_threshold do not apply to --agent=crr"),
    (["--agent=bcq", "--which_head=qhead"], "--which_head does not apply to --agent=bcq"),
    (["--agent=sqn", "--which_head=vhead"], "--which_head"),
    (["--agent=bcq", "--unlikely_threshold=1.5"], "--unlikely_threshold must be in [0, 1)"),
    (["--eval_mode=FB,NX_x"], "--eval_mode must be FB, NX_0 or NX_<k>"),
    (["--env=/nonexistent"], "/nonexistent: not an env directory"),
])
def test_cli_refuses_bad_input_with_one_line_and_writes_nothing(flags, message, tmp_path,
                                                                env_dirs):
  workdir = tmp_path / "run"
  flags = flags if any(f.startswith("--env=") for f in flags) else (
      flags + [f"--env={env_dirs['peer']}"])
  res = subprocess.run([sys.executable, "-m", "jaxrec.batchrl", f"--workdir={workdir}", *flags],
                       check=False, capture_output=True, text=True, timeout=120)
  assert res.returncode == 2, res.stderr
  lines = res.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
  assert not workdir.exists()
