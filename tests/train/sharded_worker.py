"""Subprocess body of tests/train/test_sharding.py. XLA_FLAGS (the forced CPU device count) is
read when jax is imported, so each device layout runs in a fresh interpreter.

  python tests/train/sharded_worker.py --env=DIR --agents=a2c,dqn --meshes=0,8
      --out=F.npz [--resume_at=K --resume_mesh=D --ckpt=DIR] [--devices=8]
      [--coordinator_address=H:P --num_processes=2 --process_id=I] [--resume_agents=a2c]

For each agent and each --meshes value (0 = plain jax.jit without a mesh: the single-device
path of jaxrec.train.run; D > 0 = a data axis of D devices; -1 = every device) it trains as
jaxrec.train.run does (init, test eval at epoch 0, then per epoch: train, test eval) and stores
every curve point, every eval row, the final params and the final networks' outputs on fixed
histories, under "<agent>/mesh<D>/...". With --resume_at=K it also trains on the last mesh to
epoch K, saves the RunnerState with orbax (sharded), restores it onto --resume_mesh (abstract
targets carrying the new shardings) and continues to --epochs: "<agent>/resumed/...".
"""

from __future__ import annotations

import argparse
import functools
import os
import sys

AGENT_CFGS = {  # tiny nets; dqn's buffer fills in two iterations of 32 sessions
    # the paper's A2C (the configuration these layouts were pinned with); the value critic's
    # 8-device resume differs from the uninterrupted run in the last bit (issue 17 note)
    "a2c": dict(learning_rate=3e-3, critic="q", unroll_len=1, entropy_coef=0.0),
    "pg": dict(learning_rate=3e-3, unroll_len=4),
    "dqn": dict(learning_rate=3e-3, batch_size=32, min_buffer=64, buffer_size=2048,
                target_period=4),
}


def parse_args():
  ap = argparse.ArgumentParser()
  ap.add_argument("--env", required=True)
  ap.add_argument("--agents", default="a2c")
  ap.add_argument("--meshes", default="0,8")
  ap.add_argument("--epochs", type=int, default=2)
  ap.add_argument("--num_sessions", type=int, default=32)
  ap.add_argument("--iterations", type=int, default=4)
  ap.add_argument("--eval_sessions", type=int, default=64)
  ap.add_argument("--resume_at", type=int, default=0)
  ap.add_argument("--resume_agents", default="", help="default: every agent")
  ap.add_argument("--resume_mesh", type=int, default=0)
  ap.add_argument("--ckpt", default="")
  ap.add_argument("--devices", type=int, default=8)
  ap.add_argument("--out", required=True)
  ap.add_argument("--coordinator_address", default=None)
  ap.add_argument("--num_processes", type=int, default=None)
  ap.add_argument("--process_id", type=int, default=None)
  return ap.parse_args()


def main():
  args = parse_args()
  # Compile time dominates these tiny programs; every layout is compiled with the same flags.
  os.environ["XLA_FLAGS"] = " ".join([
      os.environ.get("XLA_FLAGS", ""), f"--xla_force_host_platform_device_count={args.devices}",
      "--xla_backend_optimization_level=0", "--xla_llvm_disable_expensive_passes=true"])

  import jax
  import numpy as np
  import orbax.checkpoint as ocp

  from jaxrec.agents.registry import AgentConfig, make_agent
  from jaxrec.envs import build
  from jaxrec.train import sharding
  from jaxrec.train.loop import LoopConfig, evaluate, make_train

  multi = sharding.maybe_initialize_distributed(args.coordinator_address, args.num_processes,
                                                args.process_id)
  env, env_params0, meta = build.load_env(args.env, "train")
  test_env, test_params0, _ = build.load_env(args.env, "test")
  max_len = meta.max_len
  eval_root, train_key = jax.random.split(jax.random.PRNGKey(7))
  probe = np.random.default_rng(0).integers(-1, env.num_actions, (64, env.history_len),
                                            dtype=np.int32)
  mesh_size = lambda d: jax.device_count() if d == -1 else d

  @functools.cache
  def setup(name: str, d: int):
    """-> (agent, init, epoch, eval_fn, env_params, test_params, shardings or None)."""
    agent = make_agent(name, AgentConfig(dim=16, num_layers=1, num_heads=1,
                                         **AGENT_CFGS[name]), env.num_actions, env.history_len)
    strategy = "epsilon" if name == "dqn" else "categorical"
    loop_cfg = LoopConfig(num_sessions=args.num_sessions, iterations_per_epoch=args.iterations,
                          strategy=strategy, epsilon=0.1)
    eval_of = lambda acting, root: lambda params, epoch, tp: evaluate(
        acting, params, test_env, tp, jax.random.fold_in(root, epoch), args.eval_sessions,
        max_len, strategy, 0.1)
    if d == 0:  # today's path (jaxrec.train.run before sharding)
      init_runner, train_epoch = make_train(loop_cfg, agent, env)
      return (agent, jax.jit(init_runner), jax.jit(train_epoch),
              jax.jit(eval_of(agent, eval_root)), env_params0, test_params0, None)
    mesh = sharding.make_mesh(sharding.MeshConfig(d))
    sharding.check_sessions(mesh, num_sessions=args.num_sessions,
                            eval_sessions=args.eval_sessions)
    acting = sharding.ShardedActing(agent, mesh)
    init_runner, train_epoch = make_train(loop_cfg, acting, env)
    env_params = sharding.replicate(env_params0, mesh)
    init, epoch, shardings = sharding.jit_loop(mesh, init_runner, train_epoch, env_params)
    eval_fn = sharding.jit_replicated(eval_of(acting, sharding.replicate(eval_root, mesh)),
                                      mesh)
    return (agent, init, epoch, eval_fn, env_params, sharding.replicate(test_params0, mesh),
            shardings)

  def train(name: str, d: int, first: int, last: int, runner=None):
    agent, init, epoch_fn, eval_fn, env_params, test_params, _ = setup(name, d)
    curve, evals = [], []

    def evaluate_now(epoch):
      m = eval_fn(agent.policy_params(runner.agent), epoch, test_params)
      evals.append([float(np.asarray(m[k])) for k in ("R", "Len", "Ravg")])

    if runner is None:
      runner = init(train_key, env_params)
      evaluate_now(0)
    for e in range(first, last + 1):
      runner, points = epoch_fn(runner, env_params)
      points = jax.device_get(points)
      curve.append(np.stack([np.asarray(points[k], np.float64) for k in sorted(points)], 1))
      evaluate_now(e)
    return runner, curve, evals

  def record(results, prefix, name, runner, curve, evals):
    agent = setup(name, 0)[0]
    params = jax.device_get(agent.policy_params(runner.agent))
    outputs = agent.net.apply(params, probe)
    flat = lambda tree: np.concatenate([np.ravel(np.asarray(x, np.float64))
                                        for x in jax.tree.leaves(tree)])
    results[f"{prefix}/curve"] = np.concatenate(curve)
    results[f"{prefix}/evals"] = np.asarray(evals)
    results[f"{prefix}/params"] = flat(params)
    results[f"{prefix}/outputs"] = flat(outputs)
    results[f"{prefix}/env_steps"] = np.asarray(int(np.asarray(runner.env_steps)))
    specs = {str(getattr(x.sharding, "spec", "-")) for x in jax.tree.leaves(runner.env_state)}
    results[f"{prefix}/env_state_specs"] = np.asarray(sorted(specs))

  results = {}
  meshes = [int(m) for m in args.meshes.split(",") if m]
  for name in args.agents.split(","):
    for d in meshes:
      record(results, f"{name}/mesh{mesh_size(d)}", name, *train(name, mesh_size(d), 1,
                                                                 args.epochs))
    if args.resume_at and name in (args.resume_agents or args.agents).split(","):
      d_save, d_load = mesh_size(meshes[-1]), mesh_size(args.resume_mesh)
      runner, curve1, evals1 = train(name, d_save, 1, args.resume_at)
      ckpt = os.path.abspath(os.path.join(args.ckpt, name))
      with ocp.CheckpointManager(ckpt, item_names=("runner",)) as manager:
        manager.save(args.resume_at, args=ocp.args.Composite(
            runner=ocp.args.StandardSave(runner)))
        manager.wait_until_finished()
      del runner
      _, init, _, _, env_params, _, shardings = setup(name, d_load)
      shape = jax.eval_shape(init, train_key, env_params)
      target = shape if shardings is None else sharding.abstract(shape, shardings)
      with ocp.CheckpointManager(ckpt, item_names=("runner",)) as manager:
        restored = manager.restore(args.resume_at, args=ocp.args.Composite(
            runner=ocp.args.StandardRestore(target))).runner
      runner, curve2, evals2 = train(name, d_load, args.resume_at + 1, args.epochs, restored)
      record(results, f"{name}/resumed", name, runner, curve1 + curve2, evals1 + evals2)

  results["meta/device_count"] = np.asarray(jax.device_count())
  results["meta/process_count"] = np.asarray(jax.process_count())
  if not multi or jax.process_index() == 0:
    np.savez(args.out, **results)
  return 0


if __name__ == "__main__":
  sys.exit(main())
