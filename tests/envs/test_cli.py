"""The env CLIs as a user runs them; the default-preset run (with the simulator benchmark and
the 16384-session memory bound on it) is marked `slow`."""

import json
import subprocess
import sys

import pytest

from envs.test_calibrate import check_sides


def _run(*args):
  return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True,
                        timeout=900)


@pytest.mark.slow
def test_build_envs_default_preset_then_bench(tmp_path):
  env_dir = tmp_path / "env"
  res = _run("experiments.build_envs", "--dataset=synthetic", f"--out={env_dir}")
  assert res.returncode == 0, res.stderr[-2000:]
  meta = json.loads((env_dir / "env.json").read_text())
  assert meta["kind"] == "sequential"
  for side in ("train", "test"):
    rep = meta["reports"][side]
    assert rep["hr10"] > 2 * rep["popularity_hr10"], rep
  assert meta["reports"]["train"]["users"] == 1600  # 80/20 split of the 2000 default users
  # The default synthetic preset's random policy is in the paper's ranges, and the median
  # held-out item earns calib_pos (step 1 of the calibration rule as stated).
  check_sides(str(env_dir))
  assert all(meta["reports"][side]["anchor_quantile"] == 0.5 for side in ("train", "test"))

  out = tmp_path / "bench.json"
  res = _run("experiments.bench_envs", f"--env_dir={env_dir}", "--sizes=64,4096",
             "--min_time=0.2", "--loop_time=0.5", "--scan_steps=20", "--rounds=1",
             "--shard_devices=2", f"--out={out}")
  assert res.returncode == 0, res.stderr[-2000:]
  bench = json.loads(out.read_text())
  for key in ("matmul_gflops", "sequential_vmap_steps_per_s_4096", "sequential_loop_steps_per_s",
              "sequential_gflops_4096", "sequential_vmap_steps_per_s_64_devices_1"):
    assert bench[key] > 0, key
  # The headline is the best of one device and the 2-device worker, and says which.
  by_d = {d: bench[f"sequential_vmap_steps_per_s_4096_devices_{d}"] for d in (1, 2)}
  assert bench["sequential_vmap_steps_per_s_4096"] == max(by_d.values())
  assert by_d[bench["sequential_devices_4096"]] == max(by_d.values())
  assert bench["matmul_gflops"] == max(bench["matmul_gflops_by_process"].values())
  assert set(bench["matmul_gflops_by_process"]) == {"devices_1", "devices_2"}
  assert bench["sequential_gflops_fraction_of_matmul"] == (
      bench["sequential_gflops_4096"] / bench["matmul_gflops"])
  assert set(bench["targets"]) == {"sequential_100x_loop", "sequential_30pct_of_matmul"}

  # The memory bound README states: jaxrec.train with 16384 sessions on this env.
  out = tmp_path / "memory.json"
  res = _run("experiments.bench_memory", f"--env={env_dir}", "--sessions=16384", f"--out={out}")
  assert res.returncode == 0, res.stderr[-2000:]
  mem = json.loads(out.read_text())
  (row,) = mem["sizes"]
  assert row["sessions"] == 16384 and row["peak_rss_bytes"] > 0
  assert row["under_bound"] and row["peak_rss_bytes"] <= row["bound_bytes"], row


def test_build_envs_bad_flags_one_line_error(tmp_path):
  res = _run("experiments.build_envs", "--dataset=synthetic", "--max_len=0",
             f"--out={tmp_path / 'x'}")
  assert res.returncode != 0
  lines = res.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: --max_len must be positive")
  assert not (tmp_path / "x").exists()


def test_a_line_break_in_a_path_stays_on_the_error_line(tmp_path):
  """Paths (and catalog values) may hold control characters; `error: ...` is still one line,
  with the character written as an escape."""
  bad = tmp_path / "env\nwith break"
  res = _run("experiments.bench_envs", f"--env_dir={bad}", "--sizes=1", "--shard_devices=none",
             f"--out={tmp_path / 'x.json'}")
  lines = res.stderr.strip().splitlines()
  assert res.returncode == 2 and len(lines) == 1, res.stderr[-2000:]
  assert lines[0].startswith("error: ") and "env\\nwith break" in lines[0]
  assert not (tmp_path / "x.json").exists()
