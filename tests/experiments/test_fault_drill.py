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


def _check_drill(r: dict) -> None:
  assert r["passed"], json.dumps(r, indent=1)
  assert r["interruptions"] >= 1, r  # the drill did interrupt its job
  assert r.get("lost_labels", 0) == r.get("duplicate_labels", 0) == 0, r
  assert r.get("resume_mismatches", 0) == 0, r


def _check(summary: dict) -> None:
  failed = [r for r in summary["results"] if not r["passed"]]
  assert not failed, json.dumps(failed, indent=1)
  assert summary["passed"] == summary["drills"] == len(summary["results"])
  assert summary["lost_labels"] == summary["duplicate_labels"] == 0
  assert summary["resume_mismatches"] == 0
  for r in summary["results"]:
    _check_drill(r)


@pytest.fixture(scope="module")
def drill_run(tmp_path_factory):
  """`python -m experiments.fault_drill` over every drill, once for the module: its workdir
  (the env and the reference runs stay there), exit status, stdout and stderr."""
  workdir = tmp_path_factory.mktemp("drills")
  proc = subprocess.run([sys.executable, "-m", "experiments.fault_drill",
                         f"--workdir={workdir}"], capture_output=True, text=True, timeout=3000)
  return workdir, proc


def _results(workdir) -> dict:
  return json.loads((workdir / "fault_drill.json").read_text())


def test_every_drill_passes(drill_run):
  workdir, proc = drill_run
  assert proc.stdout.strip(), f"no summary (exit {proc.returncode}): {proc.stderr[-3000:]}"
  summary = json.loads(proc.stdout.strip().splitlines()[-1])
  assert set(summary) == {"drills", "passed", "lost_labels", "duplicate_labels",
                          "resume_mismatches", "seconds"}
  full = _results(workdir)
  _check(full)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert summary["drills"] == len(drills.DRILL_LIST)
  assert [r["name"] for r in full["results"]] == [d.name for d in drills.DRILL_LIST]


def test_label_drills_lose_and_duplicate_nothing(drill_run):
  workdir, _ = drill_run
  label = [r for r in _results(workdir)["results"] if r["name"].startswith("label_")]
  assert {"label_kill_last_manifest", "label_kill_random_2_workers"} <= {r["name"] for r in label}
  for r in label:
    _check_drill(r)
    assert r["label_shards"] == drills.LABEL_SHARDS, r


def test_offline_drills_resume_bit_for_bit(drill_run):
  workdir, _ = drill_run
  names = {d.name for d in drills.DRILL_LIST if d.job == "offline"}
  assert len(names) == 3  # kill -9 at random, inside a checkpoint save, SIGTERM
  offline = [r for r in _results(workdir)["results"] if r["name"] in names]
  assert len(offline) == 3
  for r in offline:
    _check_drill(r)
    assert r["resume_mismatches"] == 0, r  # compared, not absent


def test_the_drill_detects_damage(drill_run, tmp_path):
  """The checks can fail: a label shard deleted after the drill is reported as lost rows (the
  env and the reference label run are the drill run's, reused)."""
  workdir, _ = drill_run
  runner = drills.Drills(str(workdir), seed=0, max_reruns=2, log=lambda s: None)
  runner.build_env()
  ref = runner.reference("label")
  out = str(tmp_path / "copy")
  shutil.copytree(ref, out)
  for fn in ("requests-00003.json", "requests-00003.npz"):
    os.unlink(os.path.join(out, fn))
  found = runner._compare_labels(ref, out, os.path.join(str(workdir), "reference", "label.log"),
                                 runner.request_dir())
  assert found["lost_labels"] == drills.LABEL_ROWS
  assert any("manifest.json lists" in p for p in found["problems"])
