"""The fused training loop: agents learn, runs are deterministic, resume equals uninterrupted."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrec.agents.registry import AgentConfig, make_agent
from jaxrec.envs import MatrixEnv, MatrixParams, QuitParams
from jaxrec.errors import ConfigError, DataError
from jaxrec.train.loop import LoopConfig, _push_finished, evaluate, make_train
from jaxrec.train.run import TrainConfig, train_and_evaluate
from tests.train.conftest import metric_rows

NUM_ITEMS, MAX_LEN = 20, 10


def best_item_env():
  """Item 3 pays 4 and keeps the user; items 0-9 pay 2.5; items 10-19 pay 1 and end the
  episode. No similarity quit (beta 0), so always recommending item 3 is optimal: return 40."""
  row = np.where(np.arange(NUM_ITEMS) < 10, 2.5, 1.0)
  row[3] = 4.0
  params = MatrixParams(
      table=jnp.asarray(np.tile(row, (8, 1)), jnp.float32),
      item_vecs=jnp.eye(NUM_ITEMS),
      quit=QuitParams(beta=jnp.float32(0.0), min_reward=jnp.float32(2.0),
                      max_len=jnp.int32(MAX_LEN)))
  return MatrixEnv(NUM_ITEMS, history_len=4, quit_window=2), params


AGENT_SETUPS = {
    "a2c": (AgentConfig(dim=16, num_layers=1, num_heads=1, learning_rate=3e-3), "categorical",
            40),
    "pg": (AgentConfig(dim=16, num_layers=1, num_heads=1, learning_rate=3e-3, unroll_len=10),
           "categorical", 20),
    "dqn": (AgentConfig(dim=16, num_layers=1, num_heads=1, learning_rate=3e-3, batch_size=64,
                        min_buffer=256, target_period=20), "epsilon", 60),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(AGENT_SETUPS))
def test_agent_beats_random_on_three_seeds(name):
  agent_cfg, strategy, iterations = AGENT_SETUPS[name]
  env, params = best_item_env()
  agent = make_agent(name, agent_cfg, NUM_ITEMS, env.history_len)
  loop = LoopConfig(num_sessions=64, iterations_per_epoch=iterations, strategy=strategy,
                    epsilon=0.1)
  init_runner, train_epoch = make_train(loop, agent, env)

  def run(key):  # one pure function of the seed: vmapped over seeds, compiled once
    runner = init_runner(key, params)
    before = evaluate(agent, agent.policy_params(runner.agent), env, params, key, 256, MAX_LEN,
                      "greedy")
    for _ in range(3):
      runner, _ = train_epoch(runner, params)
    after = evaluate(agent, agent.policy_params(runner.agent), env, params, key, 256, MAX_LEN,
                     "greedy")
    return before["R"], after["R"]

  before, after = jax.jit(jax.vmap(run))(jax.random.split(jax.random.PRNGKey(0), 3))
  # A uniformly random policy earns about 2.5 here; the optimum is 40.
  rng = np.random.default_rng(0)
  random_return = np.mean([_random_episode(rng) for _ in range(2000)])
  assert random_return < 5.0
  assert np.all(np.asarray(after) > random_return + 15.0), (before, after, random_return)


def _random_episode(rng):
  row = np.where(np.arange(NUM_ITEMS) < 10, 2.5, 1.0)
  row[3] = 4.0
  total = 0.0
  for _ in range(MAX_LEN):
    r = row[rng.integers(NUM_ITEMS)]
    total += r
    if r < 2.0:
      break
  return total


def test_push_finished_keeps_the_most_recent_window():
  w = 4
  rets, lens = jnp.zeros(w), jnp.zeros(w)
  done = jnp.asarray([True, False, True, True, True, True, True])
  ep_ret = jnp.arange(7, dtype=jnp.float32)
  rets, lens, count = _push_finished(rets, lens, jnp.int32(2), ep_ret, ep_ret, done)
  assert int(count) == 8
  # Finished (in order) 0, 2, 3, 4, 5, 6; ranks 0..5; the last 4 (3, 4, 5, 6) land at slots
  # (2 + rank) % 4 = 0, 1, 2, 3 for ranks 2..5.
  np.testing.assert_array_equal(np.asarray(rets), [3.0, 4.0, 5.0, 6.0])


def _cfg(env_dir, **kw):
  base = dict(agent="a2c", env=env_dir, num_sessions=32, total_steps=32 * 8,
              steps_per_epoch=32 * 2, eval_sessions=64,
              agent_cfg=AgentConfig(dim=16, num_layers=1, num_heads=1, unroll_len=1))
  return TrainConfig(**(base | kw))


@pytest.fixture(scope="module")
def runs(seq_env_dir, tmp_path_factory):
  """Four CLI-equivalent runs: seed 1 uninterrupted (twice: once killed after epoch 2 and
  rerun), seed 1 again, and seed 2."""
  root = tmp_path_factory.mktemp("runs")
  quiet = lambda s: None
  train_and_evaluate(_cfg(seq_env_dir, seed=1), str(root / "full"), log=quiet)
  train_and_evaluate(_cfg(seq_env_dir, seed=1), str(root / "again"), log=quiet)
  train_and_evaluate(_cfg(seq_env_dir, seed=2), str(root / "other"), log=quiet)
  train_and_evaluate(_cfg(seq_env_dir, seed=1, total_steps=32 * 4), str(root / "part"),
                     log=quiet)
  resumed_log = []
  train_and_evaluate(_cfg(seq_env_dir, seed=1), str(root / "part"), log=resumed_log.append)
  return root, resumed_log


def test_same_seed_same_metrics_other_seed_differs(runs):
  root, _ = runs
  full = metric_rows(root / "full" / "metrics.jsonl")
  assert len(full) == 5 and [r["epoch"] for r in full] == [0, 1, 2, 3, 4]
  assert full == metric_rows(root / "again" / "metrics.jsonl")
  assert [r["R"] for r in full] != [r["R"] for r in metric_rows(root / "other" / "metrics.jsonl")]


def test_resume_equals_uninterrupted(runs):
  root, resumed_log = runs
  assert any("resumed from epoch 2" in l for l in resumed_log)
  assert metric_rows(root / "full" / "metrics.jsonl") == metric_rows(root / "part" / "metrics.jsonl")
  assert metric_rows(root / "full" / "curve.jsonl") == metric_rows(root / "part" / "curve.jsonl")


@pytest.mark.parametrize("kw, message", [
    ({"agent": "sac"}, "--agent must be one of a2c, dqn, pg"),
    ({"num_sessions": 0}, "--num_sessions must be positive"),
    ({"total_steps": -5}, "--total_steps must be positive"),
    ({"explore": "ucb"}, "--explore must be one of"),
    ({"agent_cfg": AgentConfig(dim=0)}, "--dim must be positive"),
])
def test_bad_config_is_refused(kw, message, seq_env_dir, tmp_path):
  with pytest.raises(ConfigError, match=message):
    train_and_evaluate(_cfg(seq_env_dir, **kw), str(tmp_path / "w"), log=lambda s: None)
  assert not (tmp_path / "w").exists()


def test_missing_env_dir_is_refused(tmp_path):
  with pytest.raises(DataError, match="not an env directory"):
    train_and_evaluate(_cfg(str(tmp_path / "nope")), str(tmp_path / "w"), log=lambda s: None)


def test_cli_bad_flag_is_one_line_error(tmp_path):
  res = subprocess.run([sys.executable, "-m", "jaxrec.train", "--agent=sac",
                        f"--env={tmp_path}", f"--workdir={tmp_path / 'w'}"],
                       capture_output=True, text=True, timeout=120)
  assert res.returncode != 0
  lines = res.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: --agent must be one of")
