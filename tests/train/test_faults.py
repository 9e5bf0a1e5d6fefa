"""Preemption (SIGTERM), the NaN guard and failpoints, in process (the kill -9 drills on the
CLIs are experiments.fault_drill, run by tests/experiments/test_fault_drill.py)."""

import dataclasses
import json
import os
import shutil
import signal

import jax
import numpy as np
import pytest

from jaxrec import faults
from jaxrec.checkpoint import latest_step, restore_run
from jaxrec.envs import build
from jaxrec.errors import JaxrecError, NonFiniteError
from jaxrec.train.pretraining import PretrainConfig, pretrain
from jaxrec.train.run import TrainConfig, train_and_evaluate
from tests.train.conftest import PRETRAIN_TINY, tiny_agent_config

quiet = lambda s: None
TIMING = ("steps_per_s", "epoch_s")


def _cfg(env_dir, **kw):
  base = dict(agent="a2c", env=env_dir, num_sessions=32, total_steps=32 * 12,
              steps_per_epoch=32 * 4, eval_sessions=64, agent_cfg=tiny_agent_config())
  return TrainConfig(**(base | kw))


def _untimed(rows):
  return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def _sigterm_after(pattern):
  """A log callback that sends this process SIGTERM when a line contains `pattern`."""
  def log(line):
    if pattern in line:
      os.kill(os.getpid(), signal.SIGTERM)
  return log


def _leaves_equal(a, b) -> bool:
  la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
  return len(la) == len(lb) and all(
      np.asarray(x).dtype == np.asarray(y).dtype
      and np.asarray(x).tobytes() == np.asarray(y).tobytes() for x, y in zip(la, lb))


@pytest.fixture(scope="module")
def reference(best_item_env_dir, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("ref") / "run")
  return workdir, train_and_evaluate(_cfg(best_item_env_dir), workdir, log=quiet)


def test_sigterm_stops_after_the_epoch_with_a_checkpoint_and_resumes_exactly(
    reference, best_item_env_dir, tmp_path):
  ref_dir, ref_rows = reference
  workdir = str(tmp_path / "run")
  before = signal.getsignal(signal.SIGTERM)
  with pytest.raises(faults.Preempted, match="stopped after epoch 1 of 3"):
    train_and_evaluate(_cfg(best_item_env_dir), workdir, log=_sigterm_after("epoch 1/3"))
  assert signal.getsignal(signal.SIGTERM) is before  # the handler is removed again
  assert latest_step(workdir) == 1
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  assert [r["epoch"] for r in rows] == [0, 1]
  resumed = train_and_evaluate(_cfg(best_item_env_dir), workdir, log=quiet)
  assert _untimed(resumed) == _untimed(ref_rows)
  assert _leaves_equal(restore_run(workdir).runner, restore_run(ref_dir).runner)


def test_sigterm_in_the_last_epoch_finishes_normally(best_item_env_dir, tmp_path):
  rows = train_and_evaluate(_cfg(best_item_env_dir, total_steps=32 * 4), str(tmp_path / "r"),
                            log=_sigterm_after("epoch 1/1"))
  assert [r["epoch"] for r in rows] == [0, 1]


def _nan_env(env_dir: str, out: str) -> str:
  """A copy of the best-item env whose train rewards of item 5 are NaN."""
  shutil.copytree(env_dir, out)
  env, params, _ = build.load_env(out, "train")
  bad = dataclasses.replace(params, table=params.table.at[:, 5].set(np.nan))
  static = {"kind": "matrix", "history_len": env.history_len, "quit_window": env.quit_window,
            "num_items": env.num_actions, "report": {}}
  shutil.rmtree(os.path.join(out, "train"))
  build.save_params(os.path.join(out, "train"), bad, static)
  return out


def test_nan_stops_the_run_naming_the_step_and_keeps_the_last_good_checkpoint(
    best_item_env_dir, tmp_path):
  env_dir = str(tmp_path / "env")
  shutil.copytree(best_item_env_dir, env_dir)
  workdir = str(tmp_path / "run")
  train_and_evaluate(_cfg(env_dir, total_steps=32 * 4), workdir, log=quiet)  # one good epoch
  assert latest_step(workdir) == 1
  shutil.rmtree(env_dir)
  _nan_env(best_item_env_dir, env_dir)  # the rewards go bad from epoch 2 on
  good = restore_run(workdir).runner
  with pytest.raises(NonFiniteError) as err:
    train_and_evaluate(_cfg(env_dir), workdir, log=quiet)
  msg = str(err.value)
  assert "\n" not in msg and "env step 160" in msg and "epoch 2" in msg, msg
  assert "last good checkpoint is epoch 1" in msg
  assert latest_step(workdir) == 1
  assert _leaves_equal(restore_run(workdir).runner, good)
  assert len(open(os.path.join(workdir, "metrics.jsonl")).readlines()) == 2


def test_pretrain_nan_guard(best_item_env_dir, tmp_path):
  cfg = PretrainConfig(env=best_item_env_dir, agent_cfg=tiny_agent_config(learning_rate=1e38),
                       **(PRETRAIN_TINY | {"epochs": 2}))
  with pytest.raises(NonFiniteError, match=r"in epoch 1 \(updates 1\.\.20\).*last good "
                     r"checkpoint is epoch 0"):
    pretrain(cfg, str(tmp_path / "run"), log=quiet)
  assert latest_step(str(tmp_path / "run")) is None
  assert not os.path.exists(tmp_path / "run" / "policy")


def test_pretrain_sigterm_resumes_exactly(best_item_env_dir, pretrained_dir, tmp_path):
  cfg = PretrainConfig(env=best_item_env_dir, agent_cfg=tiny_agent_config(), **PRETRAIN_TINY)
  workdir = str(tmp_path / "run")
  with pytest.raises(faults.Preempted, match="pre-training epoch 2 of 4"):
    pretrain(cfg, workdir, log=_sigterm_after("epoch 2/4"))
  assert not os.path.exists(os.path.join(workdir, "policy"))
  rows = pretrain(cfg, workdir, log=quiet)
  ref = [json.loads(l) for l in open(os.path.join(pretrained_dir, "metrics.jsonl"))]
  assert _untimed(rows) == _untimed(ref)
  from jaxrec.train.policy import load_policy
  net = tiny_agent_config().net(20, 4)
  assert _leaves_equal(load_policy(workdir, net), load_policy(pretrained_dir, net))


@pytest.mark.parametrize("spec, ok", [
    ("shards.record_written=2", True), ("train.saving=1,label.labeled=3", True),
    ("offline.saving=2,offline.saved=1", True),  # jaxrec.offline's driver job
    ("nope=1", False), ("train.saving=0", False), ("train.saving", False),
])
def test_failpoint_spec(spec, ok):
  if ok:
    assert all(n in faults.POINTS for n in faults.parse(spec))
  else:
    with pytest.raises(JaxrecError, match="JAXREC_FAILPOINTS: bad entry"):
      faults.parse(spec)


def test_failpoints_are_noops_unless_named(monkeypatch):
  monkeypatch.delenv(faults.ENV, raising=False)
  faults.failpoint("train.saving")
  monkeypatch.setenv(faults.ENV, "train.saved=1")
  faults.failpoint("train.saving")  # another point: no kill
  with pytest.raises(KeyError):
    faults.failpoint("train.typo")


def test_a_drill_that_raises_is_reported_not_lost(tmp_path, monkeypatch):
  """experiments.fault_drill prints its summary even when a drill cannot run (CI once got no
  output at all from it): the exception becomes that drill's problem and the others still run."""
  from experiments import drills

  def run(self, drill):
    if drill.name == "label_sigterm":
      raise OSError("disk full")
    return {"name": drill.name, "passed": True, "problems": [], "seconds": 0.0, "runs": 1}

  monkeypatch.setattr(drills.Drills, "build_env", lambda self: None)
  monkeypatch.setattr(drills.Drills, "run", run)
  summary = drills.run_drills(str(tmp_path), ["label_kill_last_manifest", "label_sigterm"],
                              log=lambda s: None)
  assert summary["drills"] == 2 and summary["passed"] == 1
  bad = summary["results"][1]
  assert bad["name"] == "label_sigterm" and not bad["passed"]
  assert bad["problems"] == ["the drill raised OSError: disk full"]
  assert (tmp_path / "fault_drill.json").exists()


def test_the_drill_runner_sees_a_progress_line_printed_just_before_exit(tmp_path, monkeypatch):
  """A job that prints its progress line and exits between two polls still has a trigger time
  (a reference run without one was taken for a failed run). The poll interval is stretched to
  3 s so that the job (a --help) is sure to print and exit inside the first one."""
  import time
  from experiments import drills
  sleep = time.sleep
  monkeypatch.setattr(time, "sleep", lambda s: sleep(3.0))
  log = str(tmp_path / "log")
  r = drills.Runner(str(tmp_path)).run(
      [("json.tool", ["--help"])], log, trigger=r"^usage: ", delay=1e9)
  assert r["rcs"] == [0] and r["trigger_s"] is not None and not r["signalled"]
