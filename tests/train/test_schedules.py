"""Update schedules: collect-then-update (minibatch epochs over a rollout) inside the fused scan
equals a Python loop of the same jitted pieces, reuses the acting forward's values exactly,
learns, resumes exactly; the EasyRL4Rec preset and the schedule's bad input."""

import json
import math
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrec.agents.registry import AgentConfig, make_agent
from jaxrec.agents.types import Transition
from jaxrec.errors import ConfigError
from jaxrec.train.loop import LoopConfig, evaluate, make_train
from jaxrec.train.run import TrainConfig, train_and_evaluate
from tests.train.conftest import MAX_LEN, NUM_ITEMS, best_item_env, metric_rows

COLLECT = dict(dim=16, num_layers=1, num_heads=1, tracker="avg", window=2, hidden_sizes=(16,),
               learning_rate=5e-3, schedule="collect", unroll_len=5, num_minibatches=4,
               update_epochs=2, max_grad_norm=0.0)


def collect_agent(env, **kw):
  return make_agent("a2c", AgentConfig(**(COLLECT | kw)), NUM_ITEMS, env.history_len)


def test_fused_collect_schedule_equals_a_python_loop_of_the_same_pieces():
  env, params = best_item_env()
  agent = collect_agent(env)
  n, iterations = 8, 3
  init_runner, train_epoch = make_train(
      LoopConfig(num_sessions=n, iterations_per_epoch=iterations), agent, env)
  runner = jax.jit(init_runner)(jax.random.PRNGKey(0), params)
  fused, _ = jax.jit(train_epoch)(runner, params)

  act = jax.jit(lambda p, h, k: agent.act_value(p, h, k, "categorical", 0.1))
  vstep = jax.jit(jax.vmap(env.step, in_axes=(0, 0, 0, None)))
  update = jax.jit(chex.assert_max_traces(agent.update, n=1))
  state, env_state, history, key = runner.agent, runner.env_state, runner.history, runner.key
  for _ in range(iterations):
    steps = []
    for _ in range(agent.unroll_len):
      key, k_act, k_env = jax.random.split(key, 3)
      action, value = act(state.params, history, k_act)
      obs, env_state, reward, done, _ = vstep(jax.random.split(k_env, n), env_state, action,
                                              params)
      steps.append(Transition(history, action, reward, done, obs.history, value))
      history = obs.history
    batch = jax.tree_util.tree_map(lambda *x: jnp.stack(x), *steps)
    key, k_update = jax.random.split(key)
    state, _ = update(state, batch, k_update)
  chex.assert_trees_all_close(fused.agent.params, state.params, rtol=1e-5, atol=1e-6)
  assert int(fused.agent.step) == iterations


def test_values_kept_from_acting_equal_re_encoding_the_rollout():
  env, params = best_item_env()
  agent = collect_agent(env)
  state = agent.init(jax.random.PRNGKey(1))
  t, n = agent.unroll_len, 8
  hist = jax.random.randint(jax.random.PRNGKey(2), (t, n, env.history_len), -1, NUM_ITEMS)
  nxt = jnp.concatenate([hist[:, :, 1:], hist[:, :, -1:]], -1)
  batch = Transition(hist, jax.random.randint(jax.random.PRNGKey(3), (t, n), 0, NUM_ITEMS),
                     jax.random.uniform(jax.random.PRNGKey(4), (t, n)) * 4,
                     jax.random.uniform(jax.random.PRNGKey(5), (t, n)) < 0.2, nxt)
  _, values = jax.vmap(lambda h: agent.act_value(state.params, h, jax.random.PRNGKey(0),
                                                 "categorical"))(hist)
  key = jax.random.PRNGKey(6)
  kept, m1 = jax.jit(agent.update)(state, batch._replace(value=values), key)
  encoded, m2 = jax.jit(agent.update)(state, batch, key)
  chex.assert_trees_all_close(kept.params, encoded.params, rtol=1e-5, atol=1e-6)
  assert m1["loss"] == pytest.approx(float(m2["loss"]), rel=1e-5)


def test_a_schedule_with_more_steps_moves_the_params_further_per_rollout():
  env, _ = best_item_env()
  one = collect_agent(env, num_minibatches=1, update_epochs=1)
  many = collect_agent(env)
  s0 = one.init(jax.random.PRNGKey(0))
  hist = jnp.full((5, 8, env.history_len), -1, jnp.int32).at[..., -1].set(3)
  batch = Transition(hist, jnp.full((5, 8), 3, jnp.int32), jnp.full((5, 8), 4.0),
                     jnp.zeros((5, 8), bool), hist)
  dist = lambda s: sum(float(jnp.abs(a - b).sum()) for a, b in zip(
      jax.tree.leaves(s.params), jax.tree.leaves(s0.params)))
  s1, _ = one.update(s0, batch, jax.random.PRNGKey(1))
  s8, _ = many.update(s0, batch, jax.random.PRNGKey(1))
  assert int(s1.step) == int(s8.step) == 1  # one update per rollout either way
  assert dist(s8) > 3 * dist(s1)  # 8 Adam steps of lr 5e-3 against 1


@pytest.mark.slow
def test_collect_schedule_learns_on_three_seeds():
  env, params = best_item_env()
  agent = collect_agent(env)
  init_runner, train_epoch = make_train(
      LoopConfig(num_sessions=32, iterations_per_epoch=40), agent, env)

  def run(key):
    runner = init_runner(key, params)
    runner, _ = train_epoch(runner, params)
    return evaluate(agent, agent.policy_params(runner.agent), env, params, key, 256, MAX_LEN,
                    "greedy")["R"]

  after = jax.jit(jax.vmap(run))(jax.random.split(jax.random.PRNGKey(0), 3))
  assert np.all(np.asarray(after) > 20.0), after  # random: ~2.5; optimum 40


def _cfg(env_dir, **kw):
  agent_cfg = AgentConfig(**(COLLECT | {"unroll_len": 2, "num_minibatches": 2}))
  base = dict(agent="a2c", env=env_dir, num_sessions=16, total_steps=16 * 2 * 8,
              steps_per_epoch=16 * 2 * 2, eval_sessions=32, agent_cfg=agent_cfg)
  return TrainConfig(**(base | kw))


def test_collect_schedule_resumes_exactly(seq_env_dir, tmp_path):
  quiet = lambda s: None
  train_and_evaluate(_cfg(seq_env_dir), str(tmp_path / "full"), log=quiet)
  train_and_evaluate(_cfg(seq_env_dir, total_steps=16 * 2 * 4), str(tmp_path / "part"),
                     log=quiet)
  train_and_evaluate(_cfg(seq_env_dir), str(tmp_path / "part"), log=quiet)
  for name in ("metrics.jsonl", "curve.jsonl"):
    assert metric_rows(tmp_path / "full" / name) == metric_rows(tmp_path / "part" / name)
  assert len(metric_rows(tmp_path / "full" / "metrics.jsonl")) == 5


@pytest.mark.parametrize("kw, message", [
    ({"steps_per_epoch": 40}, r"--steps_per_epoch \(40\) must be a multiple of the collect "
     r"length --num_sessions x unroll \(32\)"),
    ({"agent_cfg": AgentConfig(schedule="collect", num_minibatches=3, unroll_len=2)},
     r"--num_minibatches \(3\) must divide the collect length"),
    ({"agent_cfg": AgentConfig(schedule="collect", critic="q")}, "needs --critic=v"),
    ({"agent_cfg": AgentConfig(num_minibatches=2)}, "apply to --schedule=collect"),
    ({"agent_cfg": AgentConfig(window=0)}, "--window must be positive"),
    ({"agent_cfg": AgentConfig(tracker="lstm")}, "--tracker must be one of"),
    ({"agent_cfg": AgentConfig(schedule="ppo")}, "--schedule must be one of"),
])
def test_bad_schedule_or_tracker_is_refused(kw, message, seq_env_dir, tmp_path):
  with pytest.raises(ConfigError, match=message):
    train_and_evaluate(_cfg(seq_env_dir, **kw), str(tmp_path / "w"), log=lambda s: None)
  assert not (tmp_path / "w").exists()


def _train_cli(*args, timeout=300):
  return subprocess.run([sys.executable, "-m", "jaxrec.train", *args], capture_output=True,
                        text=True, timeout=timeout)


@pytest.mark.parametrize("flag", ["--tracker=gru", "--num_sessions=64", "--agent=pg",
                                  "--learning_rate=0.1", "--reward_handle=none"])
def test_preset_refuses_a_flag_it_fixes(flag, best_item_env_dir, tmp_path):
  res = _train_cli("--config=easyrl4rec", flag, f"--env={best_item_env_dir}",
                   f"--workdir={tmp_path / 'w'}")
  assert res.returncode == 2
  name = flag.split("=")[0]
  assert res.stderr.strip().splitlines() == [
      f"error: {name} does not apply to --config=easyrl4rec: the preset fixes it"]
  assert not (tmp_path / "w").exists()


def test_unknown_tracker_flag_is_one_line_exit_2(best_item_env_dir, tmp_path):
  res = _train_cli("--tracker=lstm", f"--env={best_item_env_dir}",
                   f"--workdir={tmp_path / 'w'}")
  assert res.returncode == 2
  lines = res.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: flag --tracker=lstm")
  assert not (tmp_path / "w").exists()


def test_preset_runs_the_peer_setup_and_keeps_overridable_flags(best_item_env_dir, tmp_path):
  res = _train_cli("--config=easyrl4rec", f"--env={best_item_env_dir}",
                   f"--workdir={tmp_path / 'w'}", "--total_steps=3000",
                   "--steps_per_epoch=3000", "--eval_mode=FB", "--seed=3")
  assert res.returncode == 0, res.stderr
  flags = json.load(open(tmp_path / "w" / "flags.json"))
  a = flags["agent_cfg"]
  assert (a["tracker"], a["window"], a["dim"], a["hidden_sizes"], a["reward_handle"]) == (
      "avg", 3, 32, [64, 64], "cat")
  assert (a["learning_rate"], a["entropy_coef"], a["max_grad_norm"]) == (0.005, 0.01, 0.0)
  assert (a["schedule"], a["unroll_len"], a["num_minibatches"], a["critic"]) == (
      "collect", 30, 3, "v")
  assert (flags["num_sessions"], flags["eval_sessions"], flags["seed"]) == (100, 100, 3)
  rows = metric_rows(tmp_path / "w" / "metrics.jsonl")
  assert [r["env_steps"] for r in rows] == [0, 3000]


@pytest.mark.slow  # two CLI runs: about a minute on 2 cores
@pytest.mark.parametrize("preset, agent, want", [
    ("easyrl4rec_pg", "pg", {"learning_rate": 0.001, "entropy_coef": 0.0,
                             "normalize_returns": False, "unroll_len": 32}),
    ("easyrl4rec_dqn", "dqn", {"batch_size": 64, "target_period": 320, "huber_delta": 0.0,
                               "updates_per_iteration": 100, "unroll_len": 10}),
])
def test_pg_and_dqn_presets_run_the_peers_setup(preset, agent, want, best_item_env_dir,
                                                tmp_path):
  steps = 3200 if agent == "pg" else 2000
  res = _train_cli(f"--config={preset}", f"--env={best_item_env_dir}",
                   f"--workdir={tmp_path / 'w'}", f"--total_steps={steps}",
                   f"--steps_per_epoch={steps}", "--eval_mode=FB")
  assert res.returncode == 0, res.stderr
  flags = json.load(open(tmp_path / "w" / "flags.json"))
  a = flags["agent_cfg"]
  assert flags["agent"] == agent and flags["num_sessions"] == 100
  assert (a["tracker"], a["window"], a["dim"], a["hidden_sizes"], a["reward_handle"]) == (
      "avg", 3, 32, [64, 64], "cat")
  assert {k: a[k] for k in want} == want
  rows = metric_rows(tmp_path / "w" / "metrics.jsonl")
  assert [r["env_steps"] for r in rows] == [0, steps] and math.isfinite(rows[-1]["R"])
  res = _train_cli(f"--config={preset}", "--learning_rate=0.1", f"--env={best_item_env_dir}",
                   f"--workdir={tmp_path / 'x'}")
  assert res.returncode == 2 and not (tmp_path / "x").exists()
