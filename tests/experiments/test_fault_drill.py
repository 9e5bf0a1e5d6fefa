"""experiments.fault_drill on the real CLIs: kill -9 / SIGTERM / failpoints, rerun, compare
with an uninterrupted run. Every drill spawns several JAX processes, so this module is `slow`;
the default suite has the in-process SIGTERM / NaN tests (tests/train/test_faults.py), the
labeler's crash-and-rerun test (tests/labeler/test_label.py) and the fuzzing (tests/fuzz)."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from experiments import drills

pytestmark = pytest.mark.slow


def _check(summary: dict) -> None:
  failed = [r for r in summary["results"] if not r["passed"]]
  assert not failed, json.dumps(failed, indent=1)
  assert summary["passed"] == summary["drills"] == len(summary["results"])
  assert summary["lost_labels"] == summary["duplicate_labels"] == 0
  assert summary["resume_mismatches"] == 0
  for r in summary["results"]:
    assert r["interruptions"] >= 1, r  # every drill did interrupt its job


@pytest.fixture(scope="module")
def drill_dir(tmp_path_factory):
  """One drill directory (env, request shards, reference labels) for the default tests."""
  return str(tmp_path_factory.mktemp("drills"))


def test_label_drills_lose_and_duplicate_nothing(drill_dir):
  names = ["label_kill_last_manifest", "label_kill_random_2_workers"]
  summary = drills.run_drills(drill_dir, names, log=lambda s: None)
  _check(summary)
  assert [r["name"] for r in summary["results"]] == names
  assert all(r["label_shards"] == drills.LABEL_SHARDS for r in summary["results"])


def test_offline_drills_resume_bit_for_bit(drill_dir):
  names = [d.name for d in drills.DRILL_LIST if d.job == "offline"]
  assert len(names) == 3  # kill -9 at random, inside a checkpoint save, SIGTERM
  summary = drills.run_drills(drill_dir, names, log=lambda s: None)
  _check(summary)
  assert [r["name"] for r in summary["results"]] == names


def test_the_drill_detects_damage(drill_dir, tmp_path):
  """The checks can fail: a label shard deleted after the drill is reported as lost rows."""
  runner = drills.Drills(drill_dir, seed=0, max_reruns=2, log=lambda s: None)
  runner.build_env()
  ref = runner.reference("label")
  out = str(tmp_path / "copy")
  shutil.copytree(ref, out)
  for fn in ("requests-00003.json", "requests-00003.npz"):
    os.unlink(os.path.join(out, fn))
  found = runner._compare_labels(ref, out, os.path.join(drill_dir, "reference", "label.log"),
                                 runner.request_dir())
  assert found["lost_labels"] == drills.LABEL_ROWS
  assert any("manifest.json lists" in p for p in found["problems"])


def test_every_drill_passes(tmp_path):
  proc = subprocess.run([sys.executable, "-m", "experiments.fault_drill",
                         f"--workdir={tmp_path}"], capture_output=True, text=True, timeout=3000)
  assert proc.stdout.strip(), f"no summary (exit {proc.returncode}): {proc.stderr[-3000:]}"
  summary = json.loads(proc.stdout.strip().splitlines()[-1])
  assert set(summary) == {"drills", "passed", "lost_labels", "duplicate_labels",
                          "resume_mismatches", "seconds"}
  full = json.loads((tmp_path / "fault_drill.json").read_text())
  _check(full)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert summary["drills"] == len(drills.DRILL_LIST)
