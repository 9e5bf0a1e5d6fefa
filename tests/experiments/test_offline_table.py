"""experiments.offline_table: the last-quarter aggregation over seeds and modes from run
directories written by hand, its refusals (one line, exit 2, nothing written), and (slow) the
whole table on a tiny synthetic env: every method's CLI runs, a rerun starts nothing, SIGTERM
stops the children and exits 143, and the rerun after it finishes the table."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from experiments import offline_table as ot


def _write_run(workdir, method, seed, rs, epochs_rate=("updates_per_s", 100.0), random=None):
  d = ot.run_dir(str(workdir), method, seed)
  os.makedirs(d)
  with open(os.path.join(d, "metrics.jsonl"), "w") as f:
    for epoch, r in enumerate(rs):
      row = {"epoch": epoch, "R": r, "Len": r / 2, "Ravg": 2.0, "NX_0_R": r + 1,
             "NX_0_Len": 5.0, "NX_0_Ravg": 1.0}
      if epoch:
        row[epochs_rate[0]] = epochs_rate[1] * epoch
      f.write(json.dumps(row) + "\n")
  if random is not None:
    with open(os.path.join(d, "results.json"), "w") as f:
      json.dump({"modes": {"FB": {"random": {"R": random, "Len": 3.0, "Ravg": 1.0}},
                           "NX_0": {"random": {"R": random + 1, "Len": 4.0, "Ravg": 1.0}}}}, f)


@pytest.fixture
def table(tmp_path):
  env = tmp_path / "env"
  env.mkdir()
  (env / "env.json").write_text(json.dumps({"protocol": "peer", "dataset": "synthetic"}))
  cfg = ot.TableConfig(workdir=str(tmp_path / "wd"), env=str(env), methods=("bcq", "a2c"),
                       seeds=2, batch_epochs=8, online_epochs=4, eval_mode="FB,NX_0")
  return cfg, str(env)


def test_last_quarter_over_seeds_modes_and_the_random_reference(table):
  cfg, env = table
  # bcq: 8 epochs -> the last quarter is epochs 7, 8
  _write_run(cfg.workdir, "bcq", 0, [1, 2, 3, 4, 5, 6, 7, 8, 9], random=10.0)
  _write_run(cfg.workdir, "bcq", 1, [1, 2, 3, 4, 5, 6, 7, 10, 12], random=20.0)
  # a2c: 4 epochs -> the last one; seed 1 unfinished (2 of 4 epochs): left out
  _write_run(cfg.workdir, "a2c", 0, [3, 4, 5, 6, 7], ("steps_per_s", 1000.0))
  _write_run(cfg.workdir, "a2c", 1, [3, 4, 5])
  res = ot.collect(cfg, env, {"bcq/seed0": 12.5})
  assert res["methods"]["bcq"]["FB"]["R"] == [8.5, 11.0]
  assert res["methods"]["bcq"]["FB"]["Len"] == [4.25, 5.5]
  assert res["methods"]["bcq"]["NX_0"]["R"] == [9.5, 12.0]
  assert res["methods"]["bcq"]["seeds"] == [0, 1]
  assert res["methods"]["a2c"]["FB"]["R"] == [7.0] and res["methods"]["a2c"]["seeds"] == [0]
  assert res["random"]["FB"]["R"] == [10.0, 20.0] and res["random"]["NX_0"]["R"] == [11.0, 21.0]
  run = res["runs"]["bcq/seed0"]
  assert (run["R@0"], run["last_R"], run["epochs"], run["wall_s"]) == (1, 9, 8, 12.5)
  assert run["rate"] == {"updates_per_s": 450.0}  # the median of 100 .. 800
  assert res["runs"]["a2c/seed0"]["rate"] == {"steps_per_s": 2500.0}
  md = ot.tables_markdown(res)
  assert "| bcq | 2 | 9.75 ± 1.25 | 4.88 ± 0.62 | 2.00 ± 0.00 | 9.56 / 4.06 |" in md
  assert "| a2c | 1 | 7.00 ± 0.00 |" in md and "81.80 / 29.92" in md
  assert "## NX_0" in md and "| random |  | 15.00 ± 5.00 |" in md


def test_commands_are_the_clis_with_the_budgets(table):
  cfg, env = table
  bcq = ot.command(cfg, env, "bcq", 1)
  assert bcq[1:4] == ["-m", "jaxrec.batchrl", "--agent=bcq"]
  assert "--epochs=8" in bcq and "--seed=1" in bcq and "--eval_mode=FB,NX_0" in bcq
  a2c = ot.command(cfg, env, "a2c", 0)
  assert a2c[1:4] == ["-m", "jaxrec.train", "--config=easyrl4rec"]
  assert "--total_steps=408000" in a2c and "--steps_per_epoch=102000" in a2c  # 4 x 102,000
  dqn = ot.command(cfg, env, "dqn", 0)
  assert "--total_steps=4000" in dqn and "--steps_per_epoch=1000" in dqn


def _cli(*args, cwd=None):
  return subprocess.run([sys.executable, "-m", "experiments.offline_table", *args],
                        capture_output=True, text=True, timeout=300, cwd=cwd)


@pytest.mark.parametrize("args, message", [
    (["--methods=bcq,ppo"], "--methods must be a non-empty list of bcq, cql"),
    (["--seeds=0"], "--seeds must be positive"),
    (["--eval_mode=FB,XX"], "--eval_mode must be FB, NX_0 or NX_<k>"),
    (["--env={tmp}", "--true_matrix=m.npy"], "--env is an existing env directory"),
    (["--env={tmp}"], "not an env directory (no env.json)"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_written(args, message, tmp_path):
  args = [a.format(tmp=tmp_path) for a in args]
  res = _cli(f"--workdir={tmp_path / 'wd'}", *args)
  lines = res.stderr.strip().splitlines()
  assert res.returncode == 2 and len(lines) == 1 and message in lines[0], res.stderr
  assert not (tmp_path / "wd").exists()


def test_a_rerun_with_other_budget_flags_is_refused(table):
  cfg, _ = table
  os.makedirs(cfg.workdir)
  with open(os.path.join(cfg.workdir, "offline_table.json"), "w") as f:
    json.dump({k: v for k, v in ot.dataclasses.asdict(cfg).items()} | {"batch_epochs": 9}, f)
  with pytest.raises(ot.ConfigError, match="other --batch_epochs"):
    ot.run_table(cfg, log=lambda s: None)


TINY = ["--synthetic_users=30", "--synthetic_items=20", "--dorl_ensemble=2", "--seeds=1",
        "--batch_epochs=2", "--batch_updates_per_epoch=10", "--online_epochs=1",
        "--eval_sessions=8", "--eval_mode=FB"]


@pytest.mark.slow
def test_the_whole_table_on_a_tiny_env_resumes_after_sigterm(tmp_path):
  wd = tmp_path / "wd"
  proc = subprocess.Popen([sys.executable, "-m", "experiments.offline_table", f"--workdir={wd}",
                           "--jobs=1", *TINY], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 400
  while not (wd / "runs").exists() and time.time() < deadline and proc.poll() is None:
    time.sleep(0.5)
  time.sleep(3)  # the first child is importing or training
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 143, err[-2000:]
  assert err.strip().splitlines()[-1].startswith("preempted: stopped by SIGTERM")
  assert (wd / "env" / "dorl" / "dorl.json").is_file()
  res = _cli(f"--workdir={wd}", "--jobs=2", *TINY)
  assert res.returncode == 0, res.stderr[-3000:]
  results = json.loads((wd / "results.json").read_text())
  assert list(results["methods"]) == list(ot.METHODS)
  for name, m in results["methods"].items():
    assert m["seeds"] == [0] and np.isfinite(m["FB"]["R"][0]) and m["FB"]["Len"][0] >= 1, name
  assert len(results["random"]["FB"]["R"]) == 1
  assert results["runs"]["a2c/seed0"]["epochs"] == 1
  assert results["runs"]["bcq/seed0"]["epochs"] == 2
  assert "| dorl | 1 |" in (wd / "tables.md").read_text()
  assert (wd / "curves.png").is_file()
  before = (wd / "results.json").read_text()
  res = _cli(f"--workdir={wd}", *TINY)  # everything finished: nothing runs again
  assert res.returncode == 0 and "0 runs to do" in res.stdout, res.stderr[-2000:]
  assert json.loads((wd / "results.json").read_text())["methods"] == json.loads(before)[
      "methods"]
