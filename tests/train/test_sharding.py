"""Sessions sharded over devices (jaxrec.train.sharding): D devices give the metrics of one for
the same global sessions and seed; sharded checkpoints resume exactly; bad flags are one-line
errors. Device layouts run in subprocesses (tests/train/sharded_worker.py): the forced CPU device
count is read when jax is imported."""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from jaxrec.agents.registry import AgentConfig, make_agent
from jaxrec.envs import build
from jaxrec.errors import ConfigError
from jaxrec.train import sharding
from jaxrec.train.loop import LoopConfig, make_train

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sharded_worker.py")


def _start(out, *args, devices=8):
  """Starts a worker; its output goes to a file (a full pipe would block it)."""
  log = open(f"{out}.{len(os.listdir(os.path.dirname(out)))}.log", "w+")
  proc = subprocess.Popen([sys.executable, WORKER, f"--out={out}", f"--devices={devices}",
                           *args], stdout=log, stderr=subprocess.STDOUT, text=True)
  proc.log = log
  return proc


def _finish(*procs):
  try:
    for p in procs:
      p.wait(timeout=900)
      p.log.seek(0)
      assert p.returncode == 0, p.log.read()[-3000:]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
      p.log.close()


def _assert_same_run(a: dict, b: dict, exact: bool = False):
  """Two training runs (the worker's record) agree: curve, test evals, env steps, and the final
  networks' outputs. Params: all but a handful agree to 1e-5; Adam turns the float noise of
  gradients that are zero in exact arithmetic (the attention key bias: softmax ignores a shift)
  into lr-sized steps of either sign, which the outputs do not see."""
  if exact:
    for k in ("curve", "evals", "params", "outputs", "env_steps"):
      np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    return
  assert int(a["env_steps"]) == int(b["env_steps"]) > 0
  np.testing.assert_allclose(a["curve"], b["curve"], rtol=1e-4, atol=1e-5, err_msg="curve")
  np.testing.assert_allclose(a["evals"], b["evals"], rtol=1e-4, atol=1e-5, err_msg="evals")
  np.testing.assert_allclose(a["outputs"], b["outputs"], rtol=1e-4, atol=1e-4,
                             err_msg="outputs")
  close = np.abs(a["params"] - b["params"]) <= 1e-5 + 1e-4 * np.abs(b["params"])
  assert close.mean() > 0.99, f"{(~close).sum()} of {close.size} params differ"


def _runs(path) -> dict:
  """npz of the worker -> {"<agent>/<run>": {field: array}}."""
  out = {}
  with np.load(path, allow_pickle=False) as f:
    for key in f.files:
      run, field = key.rsplit("/", 1)
      out.setdefault(run, {})[field] = f[key]
  return out


def test_eight_devices_equal_one_device_and_sharded_resume(best_item_env_dir, tmp_path):
  """The issue's key test: A2C trained on 8 forced CPU devices (sessions sharded over `data`)
  matches the plain single-device run (today's path, in a 1-device process) epoch by epoch; a
  sharded checkpoint saved after epoch 1 and restored onto 8 devices continues bit for bit.
  (DQN and PG, and 2 and 4 devices: the slow test below; about 25 s of compiling each.)"""
  env = f"--env={best_item_env_dir}"
  one = _start(tmp_path / "one.npz", env, "--meshes=0", devices=1)
  eight = _start(tmp_path / "eight.npz", env, "--meshes=8", "--resume_at=1",
                 f"--ckpt={tmp_path / 'ckpt'}")
  _finish(one, eight)
  one, eight = _runs(tmp_path / "one.npz"), _runs(tmp_path / "eight.npz")
  assert int(eight["meta"]["device_count"]) == 8
  # The env state really is split over the data axis (not replicated on every device).
  assert list(eight["a2c/mesh8"]["env_state_specs"]) == [str(P("data"))]
  assert not np.allclose(one["a2c/mesh0"]["evals"][0], one["a2c/mesh0"]["evals"][-1])
  _assert_same_run(eight["a2c/mesh8"], one["a2c/mesh0"])
  _assert_same_run(eight["a2c/resumed"], eight["a2c/mesh8"], exact=True)
  assert os.path.isdir(tmp_path / "ckpt" / "a2c" / "1")


@pytest.mark.slow
def test_all_agents_every_layout_sequential_env(seq_env_dir, tmp_path):
  """a2c, dqn and pg on the fitted sequential env (a per-session model cache in the env state)
  on 1 and 8 devices (2 and 4 are covered on the best-item env by the fast test and
  bench_scale); a checkpoint saved on 8 devices resumes on 4 (orbax reshards)."""
  p = _start(tmp_path / "r.npz", f"--env={seq_env_dir}", "--agents=a2c,dqn,pg",
             "--meshes=0,1,8", "--epochs=3", "--resume_at=2", "--resume_mesh=4",
             f"--ckpt={tmp_path / 'ckpt'}")
  _finish(p)
  runs = _runs(tmp_path / "r.npz")
  for name in ("a2c", "dqn", "pg"):
    for d in (1, 8):
      _assert_same_run(runs[f"{name}/mesh{d}"], runs[f"{name}/mesh0"])
    _assert_same_run(runs[f"{name}/resumed"], runs[f"{name}/mesh8"])
    assert list(runs[f"{name}/resumed"]["env_state_specs"]) == [str(P("data"))]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_equal_one(best_item_env_dir, tmp_path):
  """jax.distributed on CPU (gloo): 2 processes x 4 devices train one 8-way sharded run, save
  a sharded checkpoint (each process writes its shards) and resume it; the metrics equal a
  single-device run."""
  env = f"--env={best_item_env_dir}"
  one = _start(tmp_path / "one.npz", env, "--agents=a2c", "--meshes=0", devices=1)
  address = f"localhost:{_free_port()}"
  procs = [_start(tmp_path / "multi.npz", env, "--agents=a2c", "--meshes=-1",
                  "--resume_at=1", "--resume_mesh=-1", f"--ckpt={tmp_path / 'ckpt'}",
                  f"--coordinator_address={address}", "--num_processes=2",
                  f"--process_id={i}", devices=4) for i in range(2)]
  _finish(one, *procs)
  one, multi = _runs(tmp_path / "one.npz"), _runs(tmp_path / "multi.npz")
  assert int(multi["meta"]["process_count"]) == 2 and int(multi["meta"]["device_count"]) == 8
  _assert_same_run(multi["a2c/mesh8"], one["a2c/mesh0"])
  _assert_same_run(multi["a2c/resumed"], multi["a2c/mesh8"], exact=True)


@pytest.mark.slow
def test_bench_scale_reports_every_device_count(best_item_env_dir, tmp_path):
  out = tmp_path / "scale.json"
  res = subprocess.run([sys.executable, "-m", "experiments.bench_scale", f"--out={out}",
                        f"--env_dir={best_item_env_dir}", "--devices=1,2,4", "--num_sessions=64",
                        "--iterations=2", "--scan_steps=5", "--min_time=0.1", "--rounds=1",
                        "--dim=16"],
                       capture_output=True, text=True, timeout=900)
  assert res.returncode == 0, res.stderr[-3000:]
  bench = json.loads(out.read_text())
  for d in (1, 2, 4):
    assert bench[f"steps_per_s_devices_{d}"] > 0 and bench[f"env_steps_per_s_devices_{d}"] > 0
    # GFLOP/s = the same flops per session-step x each device count's measured rate.
    gflops = bench[f"env_gflops_devices_{d}"]
    assert gflops == pytest.approx(bench["env_flops_per_session_step"] *
                                   bench[f"env_steps_per_s_devices_{d}"] / 1e9)
    assert bench[f"env_gflops_fraction_of_matmul_devices_{d}"] == pytest.approx(
        gflops / bench["matmul_gflops"])
  assert bench["env_flops_per_session_step"] > 0 and bench["matmul_gflops"] > 0
  # The reference is the best matmul of the run: the parent's and each worker's, timed
  # interleaved with that worker's env rollout.
  assert set(bench["matmul_gflops_by_process"]) == {"parent", "devices_1", "devices_2",
                                                    "devices_4"}
  assert bench["matmul_gflops"] == max(bench["matmul_gflops_by_process"].values())
  assert bench["metrics_equal"] and set(bench["metric_equality"]) == {"devices_2_vs_1",
                                                                      "devices_4_vs_1"}
  assert "not a speed-up" in bench["note"]
  assert bench["memory"]["dqn"]["replay_buffer_bytes"] > 0


def test_bench_scale_bad_devices_flag_is_one_line_error(tmp_path):
  res = subprocess.run([sys.executable, "-m", "experiments.bench_scale", "--devices=1,3",
                        "--num_sessions=64", f"--out={tmp_path / 'x.json'}"],
                       capture_output=True, text=True, timeout=120)
  lines = res.stderr.strip().splitlines()
  assert res.returncode == 2 and len(lines) == 1, res.stderr[-2000:]
  assert lines[0].startswith("error: --num_sessions (64) must be a multiple of every --devices")
  assert not (tmp_path / "x.json").exists()


# --- in-process pieces (one CPU device here) ------------------------------------------------
@pytest.mark.parametrize("spec, data", [("", 0), ("auto", 0), ("data:1", 1), ("data:8", 8),
                                        ("data:all", -1)])
def test_mesh_flag_parses(spec, data):
  assert sharding.MeshConfig.parse(spec).data == data


@pytest.mark.parametrize("spec", ["model:2", "data:0", "data:-2", "data", "data:x", "8"])
def test_bad_mesh_flag_is_refused(spec):
  with pytest.raises(ConfigError, match="--mesh must be auto, data:N"):
    sharding.MeshConfig.parse(spec)


def test_sessions_must_divide_by_the_data_axis():
  sharding.check_sessions(8, num_sessions=32, eval_sessions=1024)
  with pytest.raises(ConfigError, match=r"--eval_sessions \(100\) must be a multiple of the "
                     r"data-axis size 8 \(--mesh=data:8\)"):
    sharding.check_sessions(8, num_sessions=32, eval_sessions=100)


def test_mesh_larger_than_the_machine_is_refused():
  n = jax.device_count() + 1
  with pytest.raises(ConfigError, match=f"--mesh=data:{n} needs {n} devices; {n - 1} visible"):
    sharding.make_mesh(sharding.MeshConfig(n))
  assert sharding.data_size(sharding.make_mesh()) == 1  # auto in one process: today's 1 device


@pytest.mark.parametrize("kw, message", [
    (dict(num_processes=2), "missing --coordinator_address, --process_id"),
    (dict(coordinator_address="h:1", num_processes=2, process_id=2),
     r"--process_id must be in 0..1, got 2"),
    (dict(coordinator_address="h:1", num_processes=0, process_id=0),
     "--num_processes must be positive"),
    (dict(coordinator_address="nohostport", num_processes=2, process_id=0),
     "--coordinator_address must be host:port"),
])
def test_bad_distributed_flags_are_refused(kw, message):
  with pytest.raises(ConfigError, match=message):
    sharding.maybe_initialize_distributed(**kw)


def test_single_process_needs_no_distributed():
  assert not sharding.maybe_initialize_distributed()
  assert not sharding.maybe_initialize_distributed(num_processes=1)
  assert not jax.distributed.is_initialized()


def test_runner_shardings_split_sessions_replicate_the_rest(best_item_env_dir):
  env, params, _ = build.load_env(best_item_env_dir, "train")
  agent = make_agent("dqn", AgentConfig(dim=16, num_layers=1, num_heads=1, buffer_size=512,
                                        batch_size=16, min_buffer=16), 20, env.history_len)
  init_runner, _ = make_train(LoopConfig(num_sessions=16), agent, env)
  shape = jax.eval_shape(init_runner, jax.random.PRNGKey(0), params)
  shardings = sharding.runner_shardings(sharding.make_mesh(sharding.MeshConfig(1)), shape)
  specs = lambda tree: {s.spec for s in jax.tree.leaves(tree)}
  assert specs(shardings.env_state) == specs(shardings.history) == {P("data")}
  assert specs(shardings.agent) == specs(shardings.key) == {P()}
  mem = sharding.runner_bytes(shape)
  # history [4] int32 in the runner + env state: history [4], recent [2] int32, user, t, ret.
  assert mem["bytes_per_session"] == 4 * 4 + (4 + 2 + 1 + 1 + 1) * 4
  # 512 items of (history [4], action, reward, done, next_history [4]) + flashbax's counters.
  assert 512 * (4 * 4 + 4 + 4 + 1 + 4 * 4) <= mem["replay_buffer_bytes"] < 512 * 41 + 64


def test_cli_bad_mesh_flags_are_one_line_errors():
  code = ("from jaxrec import cli\nfrom jaxrec.train import dist_flags\n"
          "def main(argv):\n  cli.reject_extra_args(argv)\n  dist_flags.mesh_from_flags()\n"
          "cli.run(main)\n")
  cases = {"--mesh=model:2": "error: --mesh must be auto, data:N (N > 0) or data:all; got",
           "--num_processes=2": "error: a multi-process run needs --coordinator_address, "
                                "--num_processes and --process_id together; missing",
           # The user forced 2 host devices: --mesh does not override that.
           "--mesh=data:3": "error: --mesh=data:3 needs 3 devices; 2 visible; on CPU start "
                            "with XLA_FLAGS=--xla_force_host_platform_device_count=3"}
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  forced = env | {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  procs = {flag: subprocess.Popen([sys.executable, "-c", code, flag], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True,
                                  env=forced if flag == "--mesh=data:3" else env)
           for flag in cases}
  for flag, proc in procs.items():
    _, err = proc.communicate(timeout=120)
    lines = err.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, (flag, err[-2000:])
    assert lines[0].startswith(cases[flag]), (flag, lines[0])


def test_cli_mesh_asks_for_cpu_devices_itself():
  """--mesh=data:N on a CPU-only host gets N host devices without XLA_FLAGS."""
  code = ("import jax\nfrom jaxrec import cli\nfrom jaxrec.train import dist_flags\n"
          "def main(argv):\n  mesh = dist_flags.mesh_from_flags()\n"
          "  print(mesh.devices.size, jax.device_count())\ncli.run(main)\n")
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  res = subprocess.run([sys.executable, "-c", code, "--mesh=data:3"], capture_output=True,
                       text=True, env=env, timeout=120)
  assert res.returncode == 0, res.stderr[-2000:]
  assert res.stdout.split() == ["3", "3"]
  res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=120)  # auto: one device, as before
  assert res.returncode == 0 and res.stdout.split() == ["1", "1"], res.stderr[-2000:]
