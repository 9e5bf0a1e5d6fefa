"""The paper pipeline with a real model (issue 18, item 5): `experiments.paper --labeler=hf
--tune` LoRA-tunes SmolLM2-135M-Instruct on the train env's logged interactions, labels the
sampled requests with the adapter, measures that labeler on held-out test-split interactions,
pre-trains iALP on its label shards and adapts it online; a rerun redoes nothing."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from labeler.test_llm import OFFLINE, gguf_path, offline, smol_dir  # noqa: F401 - fixtures

pytestmark = pytest.mark.llm


def test_tiny_preset_with_a_tuned_real_model_end_to_end_then_resume(smol_dir, tmp_path):  # noqa: F811
  work = tmp_path / "paper"
  cmd = [sys.executable, "-m", "experiments.paper", "--preset=tiny", "--seeds=1",
         "--labeler=hf", f"--model={smol_dir}", "--tune", "--methods=A2C,iALP,A-iALP_ap",
         "--noexplore", f"--workdir={work}"]
  env = os.environ | OFFLINE
  res = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env=env)
  assert res.returncode == 0, res.stderr[-3000:]
  manifest = json.loads((work / "adapter" / "manifest.json").read_text())
  assert manifest["flags"]["num"] == 16 and manifest["flags"]["k"] == 4  # the tiny preset's
  labels = work / "labels" / "labels"
  assert len([f for f in os.listdir(labels) if f.endswith(".npz")]) >= 1
  results = json.loads((work / "results.json").read_text())
  rows = results["label_quality"]["rows"]
  assert {"random", "popularity", "oracle", "untuned", "tuned"} <= set(rows)
  assert results["label_quality"]["num"] == 16 and results["label_quality"]["k"] == 4
  assert set(results["methods"]) == {"A2C", "iALP", "A-iALP_ap"}
  for entry in results["methods"].values():
    assert all(np.isfinite(v).all() for v in entry.values())
  walls = results["wall_s"]
  assert {"labels_tune", "labels_label", "labels_quality"} <= set(walls)
  assert "## Label quality" in (work / "tables.md").read_text()

  again = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env=env)
  assert again.returncode == 0, again.stderr[-3000:]
  for stage in ("tune", "sample requests", "label", "quality"):
    assert f"labels: {stage}: done before" in again.stdout
  assert json.loads((work / "results.json").read_text())["methods"] == results["methods"]
