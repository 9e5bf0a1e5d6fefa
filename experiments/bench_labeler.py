"""python -m experiments.bench_labeler --out=FILE.json [--num=100000 --k=10 --env=DIR]

Host-side throughput of the labeling pipeline, oracle backend: request shard write + read,
prompt rendering (paper Table 1), response parsing, label shard write + read, on `--num`
requests sampled from the train env of --env (default: a small synthetic sequential env built
into a temporary directory). Prints and writes JSON:
  host_prompts_per_s      num / (render + parse + the four shard IO stages)
  stages_s                seconds per stage (oracle judging reported apart: it is device work)
  reference               the same render + parse done naively in the same run: one prompt at a
                          time with str.format over the raw attribute arrays, and a regex parse
                          of every response (no per-item precomputation, no memo)
The responses parsed are the oracle's choices written as an LLM writes them (" c").
"""

from __future__ import annotations

import os
import shutil
import string
import tempfile
import time

import numpy as np
from absl import flags

from experiments import benchlib
from jaxrec import cli, shards
from jaxrec.errors import ConfigError
from llm_labeler import prompts
from llm_labeler.parse import Parser, parse_response

OUT = flags.DEFINE_string("out", None, "JSON output file")
NUM = flags.DEFINE_integer("num", 100_000, "requests")
K = flags.DEFINE_integer("k", 10, "candidates per request")
SHARD = flags.DEFINE_integer("shard_size", 10_000, "rows per shard")
ENV = flags.DEFINE_string("env", "", "env directory (default: build a small synthetic one)")
REF_NUM = flags.DEFINE_integer("reference_num", 20_000, "requests for the naive reference")


def naive_render_parse(cat: shards.Catalog, req: shards.RequestShard, texts) -> float:
  """Seconds per prompt of the straightforward way: str.format one prompt at a time."""
  letters = string.ascii_lowercase
  start = time.perf_counter()
  for h, c, t in zip(req.history.tolist(), req.candidates.tolist(), texts):
    hist = ", ".join(f"({'; '.join(cat.item_text[i])})" for i in h if i >= 0) or "none"
    cands = "".join(f"\n{letters[j]}. {'; '.join(cat.item_text[i])}" for j, i in enumerate(c))
    body = prompts.INSTRUCTION.format(scenario=cat.scenario, item=cat.item_noun,
                                      behavior=cat.behavior,
                                      attributes="; ".join(cat.attribute_names))
    _ = (f"{prompts.PREAMBLE}\n\nInstruction: {body}\nInput: "
         f"{prompts.INPUT.format(history=hist)}{cands}\n{letters[len(c)]}. None\n"
         f"Response: {prompts.RESPONSE}")
    parse_response(t, len(c))
  return (time.perf_counter() - start) / len(texts)


def _build_env(tmp: str) -> str:
  from jaxrec.data import SyntheticConfig, load_dataset
  from jaxrec.envs import build
  ds = load_dataset("synthetic", synthetic_cfg=SyntheticConfig(num_users=1000, num_items=500))
  out = os.path.join(tmp, "env")
  build.build_envs(ds, build.BuildConfig(kind="sequential", seq_steps=200), out,
                   log=lambda s: None)
  return out


def run(num: int, k: int, shard_size: int, env_dir: str, ref_num: int, work: str) -> dict:
  from jaxrec.envs import build
  from jaxrec.oracle import OracleConfig
  from jaxrec.labeling import sampling as sr
  from jaxrec.labeling.oracle_backend import OracleBackend
  env, params, meta = build.load_env(env_dir, "train")
  ds = build.load_dataset_of(env_dir)
  cat = shards.catalog_of(ds, meta.fingerprint)
  reqs = sr.from_env(env, params, sr.proposal_logits(ds.item_popularity(), "random"),
                     sr.SampleConfig(num=num, k=k, num_sessions=1024))
  rmeta = {"dataset": ds.name, "fingerprint": meta.fingerprint, "k": k,
           "history_len": env.history_len, "num_items": env.num_actions}
  names = [f"requests-{i:05d}" for i in range(0, -(-num // shard_size))]
  parts = [shards.RequestShard(*(a[i * shard_size:(i + 1) * shard_size] for a in reqs))
           for i in range(len(names))]
  req_dir, lab_dir = os.path.join(work, "req"), os.path.join(work, "lab")
  backend = OracleBackend(env_dir, OracleConfig(temperature=0.5))
  backend.label(parts[0], names[0])  # compile outside the timings
  renderer = prompts.PromptRenderer(cat, k)
  parser = Parser(k)
  label_letters = prompts.letters(k)
  t = dict.fromkeys(["write_requests", "read_requests", "render", "oracle_judge", "parse",
                     "write_labels", "read_labels"], 0.0)
  chars = 0
  all_texts = []

  def timed(stage, fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    t[stage] += time.perf_counter() - start
    return out

  for name, part in zip(names, parts):
    timed("write_requests", shards.write_requests, req_dir, name, part, rmeta)
  for name in names:
    req = timed("read_requests", shards.read_requests, req_dir, name)
    texts_in = timed("render", renderer.render, req.history, req.candidates)
    chars += sum(map(len, texts_in))
    lab = timed("oracle_judge", backend.label, req, name)
    texts = [" " + label_letters[c] for c in lab.choice.tolist()]  # what an LLM writes
    all_texts += texts
    choice, valid = timed("parse", parser, texts)
    assert valid.all() and np.array_equal(choice, lab.choice)
    timed("write_labels", shards.write_labels, lab_dir, name, lab._replace(choice=choice),
          rmeta | {"backend": "oracle", "model": backend.model,
                   "template_version": prompts.TEMPLATE_VERSION})
  for name in names:
    timed("read_labels", shards.read_labels, lab_dir, name)
  host = sum(v for s, v in t.items() if s != "oracle_judge")
  ref_n = min(ref_num, num)
  ref_req = shards.RequestShard(*(a[:ref_n] for a in reqs))
  ref_per = naive_render_parse(cat, ref_req, all_texts[:ref_n])
  fast_per = (t["render"] + t["parse"]) / num
  return {
      "host_prompts_per_s": num / host,
      "num_requests": num, "k": k, "history_len": env.history_len,
      "num_items": env.num_actions, "shards": len(names),
      "mean_prompt_chars": chars / num,
      "stages_s": t,
      "stages_prompts_per_s": {s: num / v for s, v in t.items() if v > 0},
      "end_to_end_with_oracle_prompts_per_s": num / (host + t["oracle_judge"]),
      "render_parse_prompts_per_s": 1.0 / fast_per,
      "reference": {"what": "naive per-prompt str.format render + regex parse, same run",
                    "num_requests": ref_n, "render_parse_prompts_per_s": 1.0 / ref_per,
                    "speedup": ref_per / fast_per},
      "machine": benchlib.machine(),
  }


def main(argv):
  cli.reject_extra_args(argv)
  if not OUT.value:
    raise ConfigError("--out is required (the JSON file to write)")
  if NUM.value <= 0 or SHARD.value <= 0:
    raise ConfigError("--num and --shard_size must be positive")
  prompts.letters(K.value)
  work = tempfile.mkdtemp(prefix="bench-labeler-")
  try:
    env_dir = ENV.value or _build_env(work)
    result = run(NUM.value, K.value, SHARD.value, env_dir, REF_NUM.value, work)
  finally:
    shutil.rmtree(work, ignore_errors=True)
  benchlib.report(result, OUT.value)


if __name__ == "__main__":
  cli.run(main)
