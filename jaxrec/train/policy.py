"""The pre-trained policy a `jaxrec.pretrain` run leaves behind, and what `--init_from` reads:
RUN/policy/params (orbax, ActorCritic params) and RUN/policy/policy.json (its NetConfig and
the env's dataset + fingerprint)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from jaxrec.errors import ConfigError, DataError
from jaxrec.io import atomic_write_text, one_line, read_json_object
from jaxrec.nets.networks import ActorCritic, NetConfig, init_params

POLICY_DIR = "policy"


def save_policy(workdir: str, params, net: NetConfig, info: dict) -> None:
  """workdir/policy/{params (orbax), policy.json}; policy.json is written last (= complete)."""
  directory = os.path.abspath(os.path.join(workdir, POLICY_DIR))
  primary = jax.process_index() == 0
  if primary and os.path.exists(directory):
    # policy.json marks a complete policy: it goes first, so a kill during the rewrite never
    # leaves a marker beside half-deleted params.
    with contextlib.suppress(FileNotFoundError):
      os.unlink(os.path.join(directory, "policy.json"))
    shutil.rmtree(directory)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("jaxrec.save_policy")
  ckptr = ocp.StandardCheckpointer()
  ckptr.save(os.path.join(directory, "params"), jax.device_get(params))
  ckptr.wait_until_finished()
  if primary:
    atomic_write_text(os.path.join(directory, "policy.json"),
                      json.dumps({"net": dataclasses.asdict(net)} | info, indent=2) + "\n")


def load_policy(workdir: str, net: NetConfig, fingerprint: str | None = None):
  """The pre-trained ActorCritic params of a pretrain run, checked against `net` (and the env's
  dataset fingerprint); one-line ConfigError otherwise."""
  path = os.path.join(workdir, POLICY_DIR, "policy.json")
  if not os.path.isfile(path):
    raise ConfigError(f"--init_from={workdir}: no pre-trained policy ({path} missing); run "
                      f"python -m jaxrec.pretrain --workdir={workdir} ... to the end first")
  try:
    info = read_json_object(path, "policy.json")
    have = NetConfig.from_dict(info["net"])
  except (DataError, KeyError, TypeError) as e:
    raise ConfigError(f"--init_from={workdir}: unreadable {path} ({type(e).__name__}: "
                      f"{one_line(e)})") from None
  for f in dataclasses.fields(NetConfig):
    a, b = getattr(have, f.name), getattr(net, f.name)
    if a != b:
      flag = {"num_items": "env's num_items", "history_len": "env's history_len",
              "hidden": "--hidden_sizes"}.get(f.name, f"--{f.name}")
      raise ConfigError(f"--init_from={workdir}: pre-trained with {f.name}={a}, this run has "
                        f"{flag}={b}")
  if fingerprint is not None and info.get("fingerprint") not in (None, fingerprint):
    raise ConfigError(f"--init_from={workdir}: pre-trained on dataset {info.get('dataset')!r} "
                      f"(fingerprint {info.get('fingerprint')}), not this env's ({fingerprint})")
  params_path = os.path.abspath(os.path.join(workdir, POLICY_DIR, "params"))
  try:
    params = ocp.StandardCheckpointer().restore(params_path)
  # orbax and tensorstore raise a dozen types on damaged metadata or data files (ValueError,
  # KeyError, AttributeError, OSError, ...); none has a common base below Exception.
  except Exception as e:  # noqa: BLE001
    raise ConfigError(f"--init_from={workdir}: cannot restore the policy params "
                      f"({type(e).__name__}: {one_line(e)})") from None
  want = jax.eval_shape(lambda: init_params(ActorCritic(net), jax.random.PRNGKey(0)))
  shape = lambda t: jax.tree_util.tree_map(lambda a: (tuple(np.shape(a)),
                                                      np.dtype(a.dtype).name), t)
  try:
    same = shape(params) == shape(want)
  except (AttributeError, TypeError):
    same = False
  if not same:
    raise ConfigError(f"--init_from={workdir}: the params in {params_path} do not have the "
                      "shapes of the network policy.json describes (damaged or replaced)")
  return params
