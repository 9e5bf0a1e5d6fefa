"""Rewards as a network input (--reward_handle=cat, EasyRL4Rec's): the loop's reward buffer
stays aligned with the observed items, runs resume exactly, exports carry the input, a learner
with it still learns, and agents that pre-train refuse it."""

import jax
import numpy as np
import pytest

from jaxrec.agents.registry import AgentConfig, check_applicable, make_agent
from jaxrec.errors import ConfigError
from jaxrec.export import evaluate_export, export_run
from jaxrec.train.loop import LoopConfig, evaluate, make_train
from jaxrec.train.run import TrainConfig, train_and_evaluate
from tests.train.conftest import MAX_LEN, NUM_ITEMS, best_item_env, metric_rows

SMALL = dict(dim=16, num_layers=1, num_heads=1, reward_handle="cat")


@pytest.mark.parametrize("name, cfg", [
    ("a2c", AgentConfig(**SMALL, tracker="avg", hidden_sizes=(16,), schedule="collect",
                        unroll_len=5, learning_rate=3e-3)),
    ("dqn", AgentConfig(**SMALL, batch_size=32, min_buffer=64)),
    ("pg", AgentConfig(**SMALL, unroll_len=5)),
])
def test_reward_buffer_holds_each_observed_items_normalised_reward(name, cfg):
  env, params = best_item_env()
  table = np.asarray(params.table[0])  # every user: item 3 pays 4, 0-9 2.5, 10-19 1
  lo, hi = table.min(), table.max()
  agent = make_agent(name, cfg, NUM_ITEMS, env.history_len)
  init_runner, train_epoch = make_train(LoopConfig(num_sessions=16, iterations_per_epoch=4),
                                        agent, env)
  runner, _ = jax.jit(train_epoch)(init_runner(jax.random.PRNGKey(0), params), params)
  items, rewards = (np.asarray(x) for x in runner.history)
  valid = items >= 0
  assert valid.any() and (~valid).any()  # episodes of several lengths are under way
  np.testing.assert_allclose(rewards[valid], (table[items[valid]] - lo) / (hi - lo),
                             rtol=1e-6)


@pytest.mark.slow
def test_a2c_with_the_reward_input_learns():
  env, params = best_item_env()
  agent = make_agent("a2c", AgentConfig(**SMALL, learning_rate=3e-3), NUM_ITEMS,
                     env.history_len)
  init_runner, train_epoch = make_train(LoopConfig(num_sessions=64, iterations_per_epoch=40),
                                        agent, env)

  def run(key):
    runner = init_runner(key, params)
    for _ in range(3):
      runner, _ = train_epoch(runner, params)
    return evaluate(agent, agent.policy_params(runner.agent), env, params, key, 256, MAX_LEN,
                    "greedy")["R"]

  after = jax.jit(jax.vmap(run))(jax.random.split(jax.random.PRNGKey(0), 3))
  assert np.all(np.asarray(after) > 20.0), after  # uniform random earns about 2.5; optimum 40


@pytest.fixture(scope="module")
def runs(best_item_env_dir, tmp_path_factory):
  root = tmp_path_factory.mktemp("reward_runs")
  cfg = lambda total: TrainConfig(
      agent="a2c", env=best_item_env_dir, num_sessions=16, total_steps=total,
      steps_per_epoch=32, eval_sessions=32, seed=3,
      agent_cfg=AgentConfig(**SMALL, tracker="gru", unroll_len=2))
  quiet = lambda s: None
  rows = train_and_evaluate(cfg(128), str(root / "full"), log=quiet)
  train_and_evaluate(cfg(64), str(root / "part"), log=quiet)
  train_and_evaluate(cfg(128), str(root / "part"), log=quiet)
  export_run(str(root / "full"), str(root / "export"), log=quiet)
  return root, cfg(128), rows


@pytest.mark.slow
def test_resume_with_the_reward_input_equals_uninterrupted(runs):
  root, _, _ = runs
  assert metric_rows(root / "full" / "metrics.jsonl") == metric_rows(root / "part" / "metrics.jsonl")
  assert metric_rows(root / "full" / "curve.jsonl") == metric_rows(root / "part" / "curve.jsonl")


def test_export_with_the_reward_input_reproduces_the_logged_evaluation(runs, best_item_env_dir):
  root, cfg, rows = runs
  eval_root, _ = jax.random.split(jax.random.PRNGKey(cfg.seed))
  got = evaluate_export(str(root / "export"), best_item_env_dir, cfg.eval_sessions,
                        jax.random.fold_in(eval_root, rows[-1]["epoch"]))
  for k in ("R", "Len", "Ravg"):
    assert got[k] == rows[-1][k], k


@pytest.mark.parametrize("agent", ["ialp", "ialp_ft", "ialp_ap", "llm_online"])
def test_agents_that_pretrain_or_label_refuse_the_reward_input(agent):
  with pytest.raises(ConfigError, match=f"--reward_handle.*--agent={agent}"):
    check_applicable(agent, {"reward_handle": "reward_handle"})

