"""python -m jaxrec.pretrain --env=DIR --workdir=RUN --labeler=inproc|dir|shards ...

iALP pre-training (paper Alg. 1) on preference labels; see jaxrec/train/pretraining.py.
  inproc  the simulated oracle labeler in the jitted loop (CPU-only runs; not an LLM)
  dir     lockstep through LABELER_DIR (default RUN): request shards to LABELER_DIR/requests,
          label shards from `python -m llm_labeler.label --requests=LABELER_DIR/requests
          --out=LABELER_DIR/labels --env=DIR --backend=... --follow --poll_seconds=0.05`
          running beside it (one shard per lockstep step: poll often)
  shards  from label shards an offline job wrote to LABELER_DIR/{requests,labels}
Then: python -m jaxrec.train --agent=ialp_ap --init_from=RUN --env=DIR --workdir=...
Rerunning the same command resumes from the latest checkpoint.
"""

from __future__ import annotations

from absl import flags

from jaxrec import cli
from jaxrec.agents.ialp import CANDIDATES, LABELS
from jaxrec.errors import ConfigError
from jaxrec.train import dist_flags
from jaxrec.train import flags as common
from jaxrec.train.pretraining import LABELERS, PretrainConfig, pretrain

_P = PretrainConfig
LABELER = flags.DEFINE_string("labeler", _P.labeler, f"one of {', '.join(LABELERS)}")
LABELER_DIR = flags.DEFINE_string("labeler_dir", "", "dir / shards: the directory holding "
                                  "requests/ and labels/ (dir: default --workdir)")
LABEL_TIMEOUT = flags.DEFINE_float("label_timeout", _P.label_timeout,
                                   "dir: seconds to wait for one label shard")
LABELS_FLAG = flags.DEFINE_string("labels", _P.labels, f"one of {', '.join(LABELS)}: hard = "
                                  "paper Eq. 3; soft = r^p = 1 - p(None) from the logprobs")
CANDS = flags.DEFINE_string("candidates", _P.candidates,
                            f"one of {', '.join(CANDIDATES)}: the actor's k proposals")
NUM_SESSIONS = flags.DEFINE_integer("num_sessions", _P.num_sessions, "lockstep sessions N")
EPISODE_LEN = flags.DEFINE_integer("episode_len", _P.episode_len, "steps T per episode")
EPISODES = flags.DEFINE_integer("episodes_per_epoch", _P.episodes_per_epoch,
                                "lockstep episodes per epoch (an evaluation after each epoch)")
EPOCHS = flags.DEFINE_integer("epochs", _P.epochs, "epochs (the paper: 100)")
UPDATES = flags.DEFINE_integer("updates_per_step", _P.updates_per_step,
                               "A2C minibatch updates per lockstep step")
BATCH = flags.DEFINE_integer("batch_size", _P.batch_size, "A2C minibatch from D_LLM")
BUFFER = flags.DEFINE_integer("buffer_size", _P.buffer_size, "D_LLM capacity (transitions)")
EVAL_SESSIONS = flags.DEFINE_integer("eval_sessions", _P.eval_sessions,
                                     "test-env episodes per epoch's evaluation")
EVAL_EXPLORE = flags.DEFINE_string("eval_explore", _P.eval_explore,
                                   "test-env evaluation strategy")


def config_from_flags() -> PretrainConfig:
  return PretrainConfig(
      env=common.ENV.value or "", labeler=LABELER.value, labeler_dir=LABELER_DIR.value,
      label_timeout=LABEL_TIMEOUT.value, labels=LABELS_FLAG.value,
      oracle_temperature=common.ORACLE_T.value, oracle_none_threshold=common.ORACLE_NONE.value,
      oracle_flip_prob=common.ORACLE_FLIP.value,
      oracle_quit_aware=common.ORACLE_QUIT.value, num_candidates=common.NUM_CANDIDATES.value,
      candidates=CANDS.value, num_sessions=NUM_SESSIONS.value, episode_len=EPISODE_LEN.value,
      episodes_per_epoch=EPISODES.value, epochs=EPOCHS.value, updates_per_step=UPDATES.value,
      batch_size=BATCH.value, buffer_size=BUFFER.value,
      eval_sessions=EVAL_SESSIONS.value, eval_explore=EVAL_EXPLORE.value,
      epsilon=common.EPSILON.value, seed=common.SEED.value, agent_cfg=common.agent_config())


ONLINE_ONLY = ("critic", "gae_lambda", "value_coef", "normalize_advantages")


def main(argv):
  cli.reject_extra_args(argv)
  given = [f"--{n}" for n in ONLINE_ONLY if flags.FLAGS[n].present]
  if given:
    raise ConfigError(f"{', '.join(given)} set the online critic (jaxrec.train); pre-training "
                      "(Alg. 1) learns from one-step transitions with the paper's Q critic")
  if not common.WORKDIR.value:
    raise ConfigError("--workdir is required")
  mesh = dist_flags.mesh_from_flags()
  pretrain(config_from_flags(), common.WORKDIR.value, mesh=mesh)


if __name__ == "__main__":
  cli.run(main)
