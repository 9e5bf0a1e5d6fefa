"""Export -> evaluate: the exported act() reproduces the live policy exactly, and bad exports or
mismatched envs are refused with one-line errors."""

import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrec import checkpoint
from jaxrec.agents.registry import AgentConfig
from jaxrec.envs import MatrixParams, QuitParams, build
from jaxrec.errors import DataError
from jaxrec.export import evaluate_export, export_run, load_export
from jaxrec.train.run import TrainConfig, train_and_evaluate

NUM_ITEMS, MAX_LEN = 20, 10


def write_matrix_env(out: str, num_items: int = NUM_ITEMS, fingerprint: str = "f" * 16) -> str:
  """A hand-made matrix env directory (no fit): item 3 pays 4, items < 10 pay 2.5, the rest 1
  and end the episode."""
  row = np.where(np.arange(num_items) < 10, 2.5, 1.0)
  row[3] = 4.0
  params = MatrixParams(table=jnp.asarray(np.tile(row, (8, 1)), jnp.float32),
                        item_vecs=jnp.eye(num_items),
                        quit=QuitParams(beta=jnp.float32(0.0), min_reward=jnp.float32(2.0),
                                        max_len=jnp.int32(MAX_LEN)))
  static = {"kind": "matrix", "history_len": 4, "quit_window": 2, "num_items": num_items,
            "report": {}}
  for side in ("train", "test"):
    build.save_params(os.path.join(out, side), params, static)
  meta = {"format": build.FORMAT, "dataset": "best_item", "fingerprint": fingerprint,
          "kind": "matrix", "build": {"max_len": MAX_LEN}, "reports": {}}
  with open(os.path.join(out, "env.json"), "w") as f:
    json.dump(meta, f)
  return out


@pytest.fixture(scope="module")
def env_dir(tmp_path_factory):
  return write_matrix_env(str(tmp_path_factory.mktemp("env") / "env"))


@pytest.fixture(scope="module")
def run(env_dir, tmp_path_factory):
  """A 2-epoch A2C run and its export."""
  root = tmp_path_factory.mktemp("run")
  cfg = TrainConfig(agent="a2c", env=env_dir, num_sessions=16, total_steps=64,
                    steps_per_epoch=32, eval_sessions=32, seed=3,
                    agent_cfg=AgentConfig(dim=16, num_layers=1, num_heads=1, unroll_len=1))
  rows = train_and_evaluate(cfg, str(root / "run"), log=lambda s: None)
  export_run(str(root / "run"), str(root / "export"), log=lambda s: None)
  return cfg, str(root / "run"), str(root / "export"), rows


def test_export_reproduces_the_runs_logged_evaluation(run, env_dir):
  """The run logged jaxrec.train.loop.evaluate of its live params with this key; the export,
  evaluated by jaxrec.evaluate's function, must give the very same numbers."""
  cfg, _, export_dir, rows = run
  eval_root, _ = jax.random.split(jax.random.PRNGKey(cfg.seed))
  got = evaluate_export(export_dir, env_dir, cfg.eval_sessions,
                        jax.random.fold_in(eval_root, rows[-1]["epoch"]))
  assert rows[-1]["epoch"] == 2
  for k in ("R", "Len", "Ravg", "R_std"):
    assert got[k] == rows[-1][k], k  # bit-exact on CPU


def test_exported_act_equals_live_act_for_every_strategy_and_batch(run):
  cfg, run_dir, export_dir, _ = run
  agent, params, restored = checkpoint.restore_policy(run_dir)
  assert restored.step == 2 and int(restored.runner.env_steps) == 64
  policy = load_export(export_dir)
  assert policy.config["strategy"] == "categorical" and policy.config["env"]["num_items"] == 20
  # One serialized function per strategy serves any batch size (a symbolic batch dimension).
  for strategy, n in (("greedy", 7), ("epsilon", 9), ("categorical", 1)):
    history = jax.random.randint(jax.random.PRNGKey(n), (n, 4), -1, NUM_ITEMS)
    key = jax.random.PRNGKey(11)
    live = jax.jit(lambda h, k, s=strategy: agent.act(params, h, k, s, cfg.epsilon))
    np.testing.assert_array_equal(policy.act(policy.params, history, key, strategy),
                                  live(history, key))


def _corrupt(export_dir, tmp_path, how):
  bad = str(tmp_path / "bad")
  shutil.copytree(export_dir, bad)
  if how == "params":
    with open(os.path.join(bad, "params.npz"), "r+b") as f:
      f.seek(100)
      byte = f.read(1)
      f.seek(100)
      f.write(bytes([byte[0] ^ 0xFF]))
  elif how == "act":
    os.remove(os.path.join(bad, "act_greedy.jaxexport"))
  elif how == "config":
    with open(os.path.join(bad, "config.json"), "w") as f:
      f.write("{not json")
  elif how == "missing":
    shutil.rmtree(bad)
  return bad


@pytest.mark.parametrize("how, message", [
    ("params", "params.npz: sha256 mismatch"),
    ("act", "act_greedy.jaxexport: missing from the export"),
    ("config", "config.json: unreadable"),
    ("missing", "no such export directory"),
])
def test_corrupt_or_missing_export_is_refused(run, env_dir, tmp_path, how, message):
  bad = _corrupt(run[2], tmp_path, how)
  with pytest.raises(DataError, match=message):
    evaluate_export(bad, env_dir, 8, jax.random.PRNGKey(0))


def test_mismatched_env_is_refused(run, tmp_path):
  other = write_matrix_env(str(tmp_path / "other"), fingerprint="0" * 16)
  with pytest.raises(DataError, match="fingerprint 0000000000000000, but the export was "
                                      "trained on 'best_item' fingerprint ffff"):
    evaluate_export(run[2], other, 8, jax.random.PRNGKey(0))
  bigger = write_matrix_env(str(tmp_path / "bigger"), num_items=30)
  with pytest.raises(DataError, match="30 items, the export acts over 20"):
    evaluate_export(run[2], bigger, 8, jax.random.PRNGKey(0))


def test_export_refuses_an_existing_out_and_a_non_run(run, tmp_path):
  with pytest.raises(DataError, match="already exists"):
    export_run(run[1], run[2], log=lambda s: None)
  with pytest.raises(DataError, match="not a run directory"):
    export_run(str(tmp_path), str(tmp_path / "out"), log=lambda s: None)
  assert not (tmp_path / "out").exists()


def _cli(*args):
  return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True,
                        timeout=300)


def test_cli_one_line_error_for_a_corrupt_export(run, env_dir, tmp_path):
  bad = _corrupt(run[2], tmp_path, "params")
  res = _cli("jaxrec.evaluate", f"--export={bad}", f"--env={env_dir}")
  assert res.returncode == 2
  lines = res.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: ") and "sha256 mismatch" in lines[0]


@pytest.mark.slow
def test_cli_round_trip(run, env_dir, tmp_path):
  _, run_dir, export_dir, _ = run
  out = tmp_path / "export"
  res = _cli("jaxrec.export", f"--workdir={run_dir}", f"--out={out}")
  assert res.returncode == 0, res.stderr[-2000:]
  res = _cli("jaxrec.evaluate", f"--export={out}", f"--env={env_dir}", "--sessions=40",
             "--seed=4", "--strategy=greedy", f"--out={tmp_path / 'm.json'}")
  assert res.returncode == 0, res.stderr[-2000:]
  printed = json.loads(res.stdout)
  assert printed == json.loads((tmp_path / "m.json").read_text())
  want = evaluate_export(export_dir, env_dir, 40, jax.random.PRNGKey(4), "greedy")
  assert printed["R"] == want["R"] and printed["Len"] == want["Len"]
