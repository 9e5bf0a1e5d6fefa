"""iALP pre-training (paper Alg. 1, Eq. 2-10): `pretrain(cfg, workdir)`, behind
`python -m jaxrec.pretrain`.

Lockstep over N sessions that start from initial states of the TRAIN env (no env reward is
used): at each of `episode_len` steps the actor proposes k candidates (top-k or sampled
without replacement), the labeler answers, `jaxrec.agents.ialp.preference_actions` turns the
answer into (a_t, r^p_t), a_t extends the history, the N transitions go to the replay buffer
D_LLM (flashbax) and A2C (Eq. 6-10, `jaxrec.agents.a2c`) takes `updates_per_step` steps on
uniform minibatches of it. An epoch is `episodes_per_epoch` such episodes; after each, the
policy is evaluated in the TEST env (R, Len, Ravg: epoch E's row is iALP's R@0 if training
stopped there; epoch 0 is the random init).

Labelers (`--labeler`):
  inproc  the simulated oracle (jaxrec.oracle, NOT an LLM) inside one jitted lax.scan per
          epoch: propose, judge, store and update never leave the device.
  dir     each step writes a request shard to LABELER_DIR/requests and waits for its label
          shard in LABELER_DIR/labels, written by a separate
          `python -m llm_labeler.label --requests=... --out=... --follow` (an LLM or the oracle,
          same or another host); DONE is written to the requests directory at the end.
  shards  no proposals: every (request, label) shard pair in LABELER_DIR/{requests,labels}
          (from jaxrec.sample_requests + llm_labeler.label, run offline) fills D_LLM once,
          as one-step transitions (see `load_shard_transitions`); then each epoch takes the
          same number of A2C updates as the lockstep modes.

Run directory: flags.json, metrics.jsonl (one row per epoch), checkpoints/ (orbax: agent +
buffer + log, one step per epoch; a rerun resumes and ends as an uninterrupted run would) and
policy/ (the final ActorCritic params + policy.json: what `--init_from` of jaxrec.train reads).
"""

from __future__ import annotations

import dataclasses
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jaxrec import config, faults, oracle, shards
from jaxrec.agents import acting, ialp
from jaxrec.agents.registry import AgentConfig, make_agent
from jaxrec.agents.types import strong_types
from jaxrec.envs import build
from jaxrec.config import nested, option
from jaxrec.errors import ConfigError
from jaxrec.train import driver
from jaxrec.train import label_exchange as exchange
from jaxrec.train import sharding
from jaxrec.train.loop import all_finite, evaluate
from jaxrec.train.policy import load_policy, save_policy

__all__ = ["PretrainConfig", "pretrain", "load_policy", "save_policy", "LABELERS", "ONLINE_ONLY"]

LABELERS = ("inproc", "dir", "shards")


# The AgentConfig options pre-training reads (the actor-critic of Alg. 1 with the paper's Q
# critic); jaxrec.pretrain defines these flags only, and refuses ONLINE_ONLY's.
AGENT_FIELDS = ("dim", "num_layers", "num_heads", "tracker", "window", "hidden_sizes",
                "learning_rate", "max_grad_norm", "gamma", "entropy_coef", "critic_target",
                "advantage")
ONLINE_ONLY = ("critic", "gae_lambda", "value_coef", "normalize_advantages", "schedule",
               "num_minibatches", "update_epochs")


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
  """`python -m jaxrec.pretrain`'s config; its options are the flags."""
  env: str = option("", "env directory from experiments.build_envs")
  labeler: str = option("inproc", f"one of {', '.join(LABELERS)}")
  labeler_dir: str = option("", "dir / shards: the directory holding requests/ and labels/ "
                            "(dir: default --workdir)")
  label_timeout: float = option(600.0, "dir: seconds to wait for one label shard")
  labels: str = option("hard", f"one of {', '.join(ialp.LABELS)}: hard = paper Eq. 3; soft = "
                       "r^p = 1 - p(None) from the logprobs")
  shard_negatives: bool = option(False, "shards: each candidate the labeler did not choose is "
                                 "one more one-step row with r^p = 0 (not in the paper; pair "
                                 "with --advantage=baseline, docs/labeler.md)")
  oracle: oracle.OracleConfig = nested(oracle.OracleConfig(), "oracle_")  # inproc labeler
  num_candidates: int = option(10, "k: items the actor proposes to the labeler (the paper's "
                               "prompt shows 10)")
  candidates: str = option("topk", f"one of {', '.join(ialp.CANDIDATES)}: the actor's k "
                           "proposals (sample: without replacement from its softmax)")
  num_sessions: int = option(256, "lockstep sessions N")
  episode_len: int = option(10, "steps T per episode (Alg. 1)")
  episodes_per_epoch: int = option(4, "lockstep episodes per epoch (an evaluation after each "
                                   "epoch)")
  epochs: int = option(10, "epochs (the paper: 100 of unstated size; 10 x 4 episodes is "
                       "CPU-sized)")
  updates_per_step: int = option(1, "A2C minibatch updates per lockstep step")
  batch_size: int = option(256, "A2C minibatch from D_LLM")
  buffer_size: int = option(100_000, "D_LLM capacity (transitions)")
  eval_sessions: int = option(512, "test-env episodes per epoch's evaluation (jaxrec.train "
                              "--agent=ialp gives R@0 over 1024)")
  eval_explore: str = option("categorical", "test-env evaluation strategy")
  epsilon: float = option(0.1, "epsilon of the epsilon strategy")
  seed: int = option(0, "seed of everything random in the run")
  agent_cfg: AgentConfig = nested(AgentConfig())
  keep_checkpoints: int = 2

  @classmethod
  def flag_skip(cls) -> tuple[str, ...]:
    """The nested options that are not pre-training flags."""
    return tuple(f"agent_cfg.{path}" for path in config.options(AgentConfig)
                 if path not in AGENT_FIELDS + ONLINE_ONLY)

  def ialp(self) -> ialp.IALPConfig:
    """Alg. 1's own settings."""
    return ialp.IALPConfig(num_candidates=self.num_candidates, candidates=self.candidates,
                           epsilon=self.epsilon, labels=self.labels,
                           num_sessions=self.num_sessions, episode_len=self.episode_len,
                           episodes_per_epoch=self.episodes_per_epoch,
                           updates_per_step=self.updates_per_step, batch_size=self.batch_size,
                           oracle=self.oracle)

  @property
  def updates_per_epoch(self) -> int:
    return self.episodes_per_epoch * self.episode_len * self.updates_per_step

  def validate(self) -> None:
    if self.labeler not in LABELERS:
      raise ConfigError(f"--labeler must be one of {', '.join(LABELERS)}; got {self.labeler!r}")
    if not self.env:
      raise ConfigError("--env is required (a directory from experiments.build_envs)")
    if self.labels not in ialp.LABELS:
      raise ConfigError(f"--labels must be one of {', '.join(ialp.LABELS)}; got {self.labels!r}")
    if self.candidates not in ialp.CANDIDATES:
      raise ConfigError(f"--candidates must be one of {', '.join(ialp.CANDIDATES)}; "
                        f"got {self.candidates!r}")
    for f in ("num_candidates", "num_sessions", "episode_len", "episodes_per_epoch", "epochs",
              "updates_per_step", "batch_size", "buffer_size", "eval_sessions",
              "keep_checkpoints"):
      if getattr(self, f) <= 0:
        raise ConfigError(f"--{f} must be positive, got {getattr(self, f)}")
    if self.label_timeout <= 0:
      raise ConfigError(f"--label_timeout must be positive, got {self.label_timeout}")
    if self.shard_negatives and (self.labeler, self.labels) != ("shards", "hard"):
      raise ConfigError("--shard_negatives needs --labeler=shards and --labels=hard (the rows "
                        "of the candidates a label did not choose)")
    if self.labeler != "shards" and self.buffer_size < self.num_sessions:
      raise ConfigError(f"--buffer_size ({self.buffer_size}) must hold one step of "
                        f"--num_sessions ({self.num_sessions})")
    if not 0.0 <= self.epsilon <= 1.0:
      raise ConfigError(f"--epsilon must be in [0, 1], got {self.epsilon}")
    acting.check_strategy(self.eval_explore)
    self.oracle.validate()
    self.agent_cfg.validate()


# --- the driver -------------------------------------------------------------------------------
def pretrain(cfg: PretrainConfig, workdir: str, log=print,
             mesh: Mesh | None = None) -> list[dict]:
  """Runs iALP pre-training to cfg.epochs (resuming from workdir's latest checkpoint) and
  writes the final policy; returns the metrics rows (epoch 0 = the random init). mesh: the
  sessions and each minibatch sharded over its `data` axis (jaxrec.train.sharding)."""
  cfg.validate()
  mesh = sharding.make_mesh() if mesh is None else mesh
  sharding.check_sessions(mesh, num_sessions=cfg.num_sessions, eval_sessions=cfg.eval_sessions,
                          batch_size=cfg.batch_size)
  if cfg.labeler == "dir" and jax.process_count() > 1:
    raise ConfigError("--labeler=dir runs in one process (it exchanges whole request shards); "
                      "use --labeler=inproc or shards with --num_processes > 1")
  primary = jax.process_index() == 0  # one process writes the logs (orbax: every process)
  log = log if primary else (lambda s: None)
  env, env_params, meta = build.load_env(cfg.env, "train")
  test_env, test_params, _ = build.load_env(cfg.env, "test")
  num_items, max_len = env.num_actions, meta.max_len
  if cfg.labeler == "shards" and not os.path.isdir(cfg.labeler_dir):
    raise ConfigError(f"--labeler=shards needs --labeler_dir (a directory with requests/ and "
                      f"labels/); got {cfg.labeler_dir!r}")
  if cfg.labeler == "inproc":
    oracle.check_env(env)
  offline, offline_stats = None, {}
  if cfg.labeler == "shards":
    offline, offline_stats = exchange.load_shard_transitions(
        cfg.labeler_dir, meta, env, num_items, cfg.labels, cfg.seed, cfg.shard_negatives)
  # Alg. 1 learns from one-step transitions of D_LLM: the paper's Q critic (Eq. 7-9), whatever
  # critic the online agents use.
  agent_cfg = dataclasses.replace(cfg.agent_cfg, critic="q")
  pt = ialp.Pretrainer(cfg.ialp(), make_agent("a2c", agent_cfg, num_items, env.history_len),
                       env, cfg.buffer_size if offline is None else int(offline.action.shape[0]),
                       lambda t: sharding.constrain_sessions(t, mesh))
  agent = pt.agent
  env_params, test_params = (sharding.replicate(p, mesh) for p in (env_params, test_params))
  eval_root, init_key, train_root = sharding.replicate(
      tuple(jax.random.split(jax.random.PRNGKey(cfg.seed), 3)), mesh)
  eval_fn = sharding.jit_replicated(lambda params, epoch, test_params: evaluate(
      sharding.ShardedActing(agent, mesh), params, test_env, test_params,
      jax.random.fold_in(eval_root, epoch), cfg.eval_sessions, max_len, cfg.eval_explore,
      cfg.epsilon), mesh)

  state = sharding.jit_replicated(pt.init, mesh)(init_key)
  if offline is not None:  # D_LLM holds every offline row (passed in, not a program constant)
    state = state._replace(buffer=sharding.jit_replicated(
        lambda b, x: strong_types(pt.buffer.add(b, x)), mesh)(
            state.buffer, sharding.replicate(offline, mesh)))
    log(f"D_LLM: {offline.action.shape[0]} labeled transitions from {cfg.labeler_dir}")
  abstract_state = sharding.abstract(jax.eval_shape(lambda: state), jax.tree.map(
      lambda _: sharding.replicated(mesh), state))
  log(f"pre-training iALP with {_LABELER_NOTES[cfg.labeler]}: {cfg.epochs} epochs x "
      f"{cfg.episodes_per_epoch} episodes x {cfg.episode_len} steps x {cfg.num_sessions} "
      "sessions")

  run_epoch = _epoch_runner(cfg, pt, env_params, meta, num_items, workdir, offline_stats,
                            mesh)
  finite = sharding.jit_replicated(all_finite, mesh)

  def epoch_fn(state, epoch):
    new_state, stats = run_epoch(state, epoch, jax.random.fold_in(train_root, epoch))
    ok = (bool(finite(new_state.agent.params))
          and np.isfinite([stats["actor_loss"], stats["critic_loss"]]).all())
    where = None if ok else (f"in epoch {epoch} (updates {(epoch - 1) * cfg.updates_per_epoch + 1}"
                             f"..{epoch * cfg.updates_per_epoch})")
    return new_state, driver.Epoch(stats=stats, nonfinite=where)

  def progress(row):
    tail = f"test R {row['R']:.3f} Len {row['Len']:.2f} Ravg {row['Ravg']:.3f}"
    if "none_rate" not in row:
      return "", tail
    return (f"{row['epoch_s']:.1f}s | None rate {row['none_rate']:.3f} mean r^p "
            f"{row['mean_rp']:.3f}"), tail

  job = driver.Job(name="pretrain", workdir=workdir, config=cfg, num_epochs=cfg.epochs,
                   keep_checkpoints=cfg.keep_checkpoints, counter="updates",
                   count=lambda state, epoch: epoch * cfg.updates_per_epoch,
                   timing=lambda dt: {"epoch_s": dt}, primary=primary,
                   noun="pre-training epoch")
  state, logs = driver.run_epochs(
      job, state, abstract_state, epoch_fn=epoch_fn, progress=progress, log=log,
      evaluate_fn=lambda state, epoch: driver.scalars(eval_fn(state.agent.params, epoch,
                                                              test_params)))
  faults.failpoint("pretrain.policy")
  save_policy(workdir, state.agent.params, agent.cfg.net,
              {"dataset": meta.dataset, "fingerprint": meta.fingerprint, "env": cfg.env,
               "labeler": cfg.labeler, "epochs": cfg.epochs})
  if cfg.labeler == "dir":
    shards.mark_done(os.path.join(cfg.labeler_dir or workdir, "requests"))
  return logs["metrics"]


_LABELER_NOTES = {"inproc": "the in-process oracle (a simulated judge, not an LLM)",
                  "dir": "label shards from a separate llm_labeler.label job",
                  "shards": "offline label shards"}


def _epoch_runner(cfg: PretrainConfig, pt: ialp.Pretrainer, env_params, meta, num_items,
                  workdir, offline_stats: dict, mesh: Mesh):
  """-> run_epoch(state, epoch, key) -> (state, stats dict) for the configured labeler."""
  if cfg.labeler == "inproc":
    inproc = sharding.jit_replicated(pt.inproc_epoch, mesh)

    def inproc_epoch(state, epoch, key):
      del epoch
      state, stats = inproc(state, env_params, key)
      return state, driver.scalars(stats._asdict())
    return inproc_epoch
  if cfg.labeler == "shards":
    train = sharding.jit_replicated(
        lambda state, key: pt.train(state, key, cfg.updates_per_epoch), mesh)

    def shards_epoch(state, epoch, key):
      del epoch
      state, m = train(state, key)
      return state, offline_stats | {"actor_loss": float(m["actor_loss"]),
                                     "critic_loss": float(m["critic_loss"])}
    return shards_epoch

  # dir: a Python loop over steps; propose and learn are the same jitted functions as inproc.
  labeler_dir = cfg.labeler_dir or workdir
  req_dir, lab_dir = (os.path.join(labeler_dir, d) for d in ("requests", "labels"))
  os.makedirs(req_dir, exist_ok=True)
  os.makedirs(lab_dir, exist_ok=True)
  shards.remove_stale_temps(req_dir)
  if shards.is_done(req_dir):
    os.unlink(os.path.join(req_dir, shards.DONE))  # resumed after a finished run's marker
  req_meta = exchange.request_meta(meta, cfg.num_candidates, pt.env.history_len, num_items)
  if os.path.exists(os.path.join(cfg.env, "dataset.npz")):  # the prompts' item text
    shards.write_catalog(req_dir, shards.catalog_of(build.load_dataset_of(cfg.env),
                                                    meta.fingerprint))
  start = jax.jit(pt.start)
  propose = jax.jit(pt.propose)
  learn = jax.jit(pt.learn)
  n, t_len = cfg.num_sessions, cfg.episode_len

  def dir_epoch(state, epoch, key):
    stats, wait_s = [], 0.0
    for e, (k_start, k_steps) in enumerate(ialp.episode_keys(key, pt.cfg)):
      history, user = start(k_start, env_params)
      session = ((epoch - 1) * cfg.episodes_per_epoch + e) * n + np.arange(n, dtype=np.int32)
      for t in range(t_len):
        k_propose, _, k_learn = jax.random.split(k_steps[t], 3)
        cands = propose(state, history, k_propose)
        name = f"e{epoch:05d}-p{e:04d}-t{t:04d}"
        shard = shards.RequestShard(session=session, step=np.full(n, t, np.int32),
                                    history=np.asarray(history, np.int32),
                                    candidates=np.asarray(cands, np.int32),
                                    user=np.asarray(user, np.int32))
        exchange.post_request(req_dir, name, shard, req_meta)
        t0 = time.perf_counter()
        labels = exchange.await_labels(lab_dir, name, n, cfg.label_timeout, cfg.labels == "soft")
        wait_s += time.perf_counter() - t0
        logprobs = (labels.logprobs if labels.logprobs is not None
                    else np.zeros((n, cfg.num_candidates + 1), np.float32))
        state, history, st = learn(state, history, cands, labels.choice, labels.valid,
                                   logprobs, t == t_len - 1, k_learn)
        stats.append(st)
    mean = jax.tree_util.tree_map(lambda *xs: jnp.mean(jnp.stack(xs)), *stats)
    return state, driver.scalars(mean._asdict()) | {"label_wait_s": wait_s}

  return dir_epoch
