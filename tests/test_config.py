"""jaxrec.config: flags generated from typed configs, and the CLIs built on it."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest
from absl import flags

from jaxrec import config
from jaxrec.agents.registry import AGENTS, FIELDS, AgentConfig, check_applicable
from jaxrec.errors import ConfigError
from jaxrec.oracle_config import OracleConfig
from jaxrec.train.pretraining import AGENT_FIELDS, ONLINE_ONLY, PretrainConfig
from jaxrec.train.run import TrainConfig
from llm_labeler.job import LabelConfig


@dataclasses.dataclass(frozen=True)
class Inner:
  rate: float = config.option(0.5, "a rate")
  limit: float | None = config.option(None, "an optional limit")


@dataclasses.dataclass(frozen=True)
class Outer:
  name: str = config.option("a", "a name", choices=("a", "b"))
  count: int = config.option(3, "a count")
  on: bool = config.option(False, "a switch")
  inner: Inner = config.nested(Inner(), "in_")
  hidden: int = 7  # not an option


def _parsed(cls, argv, **kw):
  fv = flags.FlagValues()
  config.define_flags(cls, flag_values=fv, **kw)
  fv(["prog", *argv])
  return fv


def test_flags_are_generated_from_the_fields_with_their_types_and_nesting():
  fv = _parsed(Outer, ["--name=b", "--count=5", "--on", "--in_rate=0.25", "--in_limit=2"])
  assert config.from_flags(Outer, fv) == Outer("b", 5, True, Inner(0.25, 2.0))
  assert config.set_on_command_line(Outer, fv) == {
      "name": "name", "count": "count", "on": "on", "inner.rate": "in_rate",
      "inner.limit": "in_limit"}
  assert "hidden" not in fv and fv["in_limit"].help == "an optional limit"
  with pytest.raises(flags.IllegalFlagValueError):
    fv(["prog", "--name=c"])  # choices become an enum


def test_defaults_round_trip_and_skipped_options_keep_their_defaults():
  fv = _parsed(Outer, [], skip=("inner",))
  assert "in_rate" not in fv and config.from_flags(Outer, fv) == Outer()
  assert config.options(Outer, skip=("inner",)) == {"name": "name", "count": "count", "on": "on"}


def test_a_flag_two_configs_share_must_agree_on_its_default():
  fv = flags.FlagValues()
  config.define_flags(Inner, flag_values=fv)
  config.define_flags(Inner, flag_values=fv)  # the same option again: shared

  @dataclasses.dataclass(frozen=True)
  class Other:
    rate: float = config.option(0.9, "another rate")

  with pytest.raises(TypeError, match="--rate: defined with default 0.5"):
    config.define_flags(Other, flag_values=fv)


@pytest.mark.parametrize("cls, skip", [(TrainConfig, ()), (LabelConfig, ()),
                                       (PretrainConfig, PretrainConfig.flag_skip())])
def test_every_cli_config_defines_each_flag_once_and_reads_back_its_defaults(cls, skip):
  fv = _parsed(cls, [], skip=skip)
  assert config.from_flags(cls, fv) == cls()
  names = list(config.options(cls, skip).values())
  assert len(names) == len(set(names))


def test_the_oracle_flags_keep_their_names_everywhere_an_oracle_is_configured():
  want = {"oracle_temperature", "oracle_none_threshold", "oracle_flip_prob", "oracle_quit_aware"}
  for cls, skip in ((TrainConfig, ()), (LabelConfig, ()),
                    (PretrainConfig, PretrainConfig.flag_skip())):
    assert want <= set(config.options(cls, skip).values()), cls.__name__
  fv = _parsed(LabelConfig, ["--oracle_quit_aware", "--oracle_temperature=0"])
  assert config.from_flags(LabelConfig, fv).oracle == OracleConfig(0.0, None, 0.0, True)


def test_pretraining_defines_only_the_agent_options_it_reads():
  agent = {p.split(".", 1)[1] for p in config.options(PretrainConfig, PretrainConfig.flag_skip())
           if p.startswith("agent_cfg.")}
  assert agent == set(AGENT_FIELDS + ONLINE_ONLY)


def test_each_agent_reads_a_known_subset_of_the_options():
  fields = {p.split(".")[0] for p in config.options(AgentConfig)}
  assert set(FIELDS) == set(AGENTS)
  for agent, used in FIELDS.items():
    assert set(used) <= fields, agent
  check_applicable("dqn", {"huber_delta": "huber_delta", "dim": "dim"})
  with pytest.raises(ConfigError, match=r"^--gae_lambda, --oracle_temperature do not apply to "
                                        r"--agent=dqn$"):
    check_applicable("dqn", {"gae_lambda": "gae_lambda", "oracle.temperature":
                             "oracle_temperature", "dim": "dim"})


def test_train_cli_refuses_a_flag_the_agent_does_not_read_before_writing(tmp_path):
  work = tmp_path / "run"
  res = subprocess.run([sys.executable, "-m", "jaxrec.train", "--agent=pg", "--env=E",
                        f"--workdir={work}", "--buffer_size=10"],
                       capture_output=True, text=True, timeout=120)
  assert res.returncode == 2 and not work.exists()
  assert res.stderr.strip() == "error: --buffer_size does not apply to --agent=pg"


def test_label_cli_passes_quit_awareness_to_the_oracle(tmp_path):
  res = subprocess.run([sys.executable, "-c", (
      "import sys; from absl import flags; from llm_labeler import label; "
      "flags.FLAGS(sys.argv); import dataclasses, json; "
      "print(json.dumps(dataclasses.asdict(label.config_from_flags().oracle)))"),
      "--oracle_quit_aware", "--oracle_flip_prob=0.25"], capture_output=True, text=True,
      timeout=120)
  assert res.returncode == 0, res.stderr
  assert json.loads(res.stdout) == {"temperature": 0.5, "none_threshold": None,
                                    "flip_prob": 0.25, "quit_aware": True}


def test_run_flags_written_before_the_nested_oracle_still_load(tmp_path):
  from jaxrec.checkpoint import read_train_config
  cfg = TrainConfig(env="/e", agent="llm_online",
                    agent_cfg=AgentConfig(dim=8, oracle=OracleConfig(0.0, -1.0, 0.1, True)))
  old = dataclasses.asdict(cfg)
  oracle = old["agent_cfg"].pop("oracle")
  old["agent_cfg"] |= {f"oracle_{k}": v for k, v in oracle.items()}  # the flat layout
  (tmp_path / "flags.json").write_text(json.dumps(old))
  assert read_train_config(str(tmp_path)) == cfg
  (tmp_path / "flags.json").write_text(json.dumps(dataclasses.asdict(cfg)))
  assert read_train_config(str(tmp_path)) == cfg


def test_list_and_renamed_options():
  from experiments.paper import PaperConfig
  from jaxrec.envs.build import BuildConfig
  fv = _parsed(PaperConfig, ["--methods=A2C,DQN", "--noexplore"])
  got = config.from_flags(PaperConfig, fv, dataset="coat")
  assert got.methods == ("A2C", "DQN") and not got.explore and got.dataset == "coat"
  fv = _parsed(BuildConfig, ["--env_kind=matrix", "--mf_negatives=3"])
  assert config.from_flags(BuildConfig, fv) == BuildConfig(kind="matrix", mf_negatives=3)
  assert "kind" not in fv and "reward_max" not in fv


def test_integer_list_and_optional_int_options_parse_and_round_trip(tmp_path):
  from jaxrec.checkpoint import read_train_config
  fv = _parsed(AgentConfig, ["--hidden_sizes=64,32", "--window=3", "--tracker=avg"])
  got = config.from_flags(AgentConfig, fv)
  assert (got.hidden_sizes, got.window, got.tracker) == ((64, 32), 3, "avg")
  assert config.from_flags(AgentConfig, _parsed(AgentConfig, [])).window is None
  with pytest.raises(ConfigError, match="--hidden_sizes must be a comma-separated list of "
                     "integers, got '64,x'"):
    config.from_flags(AgentConfig, _parsed(AgentConfig, ["--hidden_sizes=64,x"]))
  cfg = TrainConfig(env="/e", agent_cfg=got)
  (tmp_path / "flags.json").write_text(json.dumps(dataclasses.asdict(cfg)))
  assert read_train_config(str(tmp_path)) == cfg  # JSON lists come back as tuples
  bad = dataclasses.asdict(cfg)
  bad["agent_cfg"]["hidden_sizes"] = [64, "32"]
  (tmp_path / "flags.json").write_text(json.dumps(bad))
  from jaxrec.errors import DataError
  with pytest.raises(DataError, match="field hidden_sizes"):
    read_train_config(str(tmp_path))
