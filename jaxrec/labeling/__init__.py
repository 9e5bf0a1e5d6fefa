"""The JAX side of preference labeling: what needs the envs and the simulated judge.

  sampling        request shards (history + k candidates) from an env's sessions or a dataset
                  (`python -m jaxrec.sample_requests`)
  oracle_backend  the `oracle` labeler backend: jaxrec.oracle's SIMULATED judge over request
                  shards (not an LLM); llm_labeler builds it through `make_oracle_backend(...)`
  catalog_of_env  the item catalog of an env directory's dataset
  heldout         labeled prompts (history, k candidates, the true next item's letter or
                  None) from the env's train split (LoRA tuning) or test split (label quality)

llm_labeler imports from jaxrec only the shard format (jaxrec.shards), errors, faults, io, the
CLI and config helpers, and, lazily where a user asks for them, the entry points here.
"""

from __future__ import annotations


def catalog_of_env(env_dir: str):
  """The shards.Catalog of the dataset an env directory was built from."""
  from jaxrec import shards
  from jaxrec.envs import build
  ds = build.load_dataset_of(env_dir)
  return shards.catalog_of(ds, build.fingerprint(ds))


def make_oracle_backend(env_dir: str, oracle_cfg, seed: int):
  """The oracle labeler backend (jaxrec.labeling.oracle_backend.OracleBackend)."""
  from jaxrec.labeling.oracle_backend import OracleBackend
  return OracleBackend(env_dir, oracle_cfg, seed=seed)


def heldout_examples(env_dir: str, which: str, **example_cfg):
  """(heldout.Examples, catalog) of the env's `which` split; example_cfg: ExampleConfig's
  fields (num, k, history_len, none_frac, negatives, seed). Popular negatives are weighted by
  the split's own interaction counts."""
  from jaxrec.labeling.heldout import ExampleConfig, make_examples, split_of_env
  side, ds = split_of_env(env_dir, which)
  ex = make_examples(side, ds.num_items, side.item_popularity(), ExampleConfig(**example_cfg))
  return ex, catalog_of_env(env_dir)
