"""Online adaptation from a pre-training run (Alg. 2) through train_and_evaluate: iALP,
A-iALP_ft and A-iALP_ap start from the pre-trained policy (R@0 far above a random init) and
--init_from errors; LLMOnline through the loop."""

import json
import subprocess
import sys

import numpy as np
import pytest

from jaxrec.errors import ConfigError
from jaxrec.train.run import TrainConfig, train_and_evaluate
from tests.train.conftest import tiny_agent_config

quiet = lambda s: None


def _cfg(env_dir, **kw):
  base = dict(agent="a2c", env=env_dir, num_sessions=32, total_steps=32 * 8,
              steps_per_epoch=32 * 4, eval_sessions=256,
              agent_cfg=tiny_agent_config())
  return TrainConfig(**(base | kw))


@pytest.fixture(scope="module")
def online(best_item_env_dir, pretrained_dir, tmp_path_factory):
  """A-iALP_ap from the pre-trained policy, alpha0 = 0: epoch 0 acts with pi_theta alone."""
  workdir = tmp_path_factory.mktemp("online") / "ialp_ap"
  cfg = _cfg(best_item_env_dir, agent="ialp_ap", init_from=pretrained_dir,
             agent_cfg=tiny_agent_config(alpha0=0.0))
  return workdir, train_and_evaluate(cfg, str(workdir), log=quiet)


def test_ap_starts_from_the_pretrained_policy(online, pretrained_dir):
  _, rows = online
  pre = [json.loads(l) for l in open(f"{pretrained_dir}/metrics.jsonl")]
  # R@0 is the pre-trained policy's (pre-training's last row, other eval keys), far above the
  # random init's (pre-training's epoch 0, same strategy).
  assert abs(rows[0]["R"] - pre[-1]["R"]) < 3.0, (rows[0]["R"], pre[-1]["R"])
  assert rows[0]["R"] > pre[0]["R"] + 15.0, (rows[0]["R"], pre[0]["R"])
  assert [r["epoch"] for r in rows] == [0, 1, 2] and "loss" in rows[-1]


def test_ap_alpha_ramps_over_half_the_run(online):
  workdir, rows = online
  curve = [json.loads(l) for l in open(workdir / "curve.jsonl")]
  # alpha_steps 0 = half of total_steps (128 env steps = 4 updates of 32 sessions).
  np.testing.assert_allclose([c["alpha"] for c in curve],
                             [0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0])
  assert rows[-1]["alpha"] == 1.0


@pytest.mark.parametrize("kw, message", [
    ({"agent": "ialp_ft"}, "--agent=ialp_ft needs --init_from"),
    ({"agent": "a2c", "init_from": "x"}, "--init_from applies to ialp, ialp_ft, ialp_ap"),
    ({"agent": "ialp", "init_from": "/nonexistent"}, "no pre-trained policy"),
])
def test_init_from_errors(kw, message, best_item_env_dir, tmp_path):
  with pytest.raises(ConfigError, match=message):
    train_and_evaluate(_cfg(best_item_env_dir, **kw), str(tmp_path / "w"), log=quiet)
  assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("kw, message", [
    ({"dim": 32}, "pre-trained with dim=16, this run has --dim=32"),
    ({"tracker": "avg"}, "pre-trained with tracker=sasrec, this run has --tracker=avg"),
    ({"hidden_sizes": (8,)}, r"pre-trained with hidden=\(\), this run has --hidden_sizes=\(8,\)"),
])
def test_init_from_incompatible_net(kw, message, best_item_env_dir, pretrained_dir, tmp_path):
  cfg = _cfg(best_item_env_dir, agent="ialp_ft", init_from=pretrained_dir,
             agent_cfg=tiny_agent_config(**kw))
  with pytest.raises(ConfigError, match=message):
    train_and_evaluate(cfg, str(tmp_path / "w"), log=quiet)


def test_cli_init_from_error_is_one_line(best_item_env_dir, tmp_path):
  res = subprocess.run([sys.executable, "-m", "jaxrec.train", "--agent=ialp_ap",
                        f"--env={best_item_env_dir}", f"--init_from={tmp_path}/none",
                        f"--workdir={tmp_path / 'w'}"], capture_output=True, text=True,
                       timeout=120)
  assert res.returncode == 2
  lines = res.stderr.strip().splitlines()
  assert len(lines) == 1 and "no pre-trained policy" in lines[0], res.stderr
