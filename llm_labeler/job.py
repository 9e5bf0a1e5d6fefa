"""The labeling job behind `python -m llm_labeler.label` (see label.py for the flags).

Labels every request shard of DIR that has no label shard in --out yet, one shard at a time
(each committed atomically, see jaxrec.shards), so a killed job rerun finishes the rest with
each shard labeled exactly once; a committed label shard is never rewritten.

  --num_workers=W --worker_id=i   this process labels only its share of the shards (hosts may
                                  share --out: commits are locked, the manifest is derived)
  --follow                        keep polling DIR for new shards until DIR/DONE exists and
                                  every shard (of this worker) is labeled, then exit 0

Backends: vllm (GPU hosts: --model, --lora_path, --tensor_parallel_size, --max_num_seqs,
--dtype, --gpu_memory_utilization), hf (transformers on CPU or --device=cuda), oracle (a SIMULATED
judge on the --env train user model: not an LLM; for CPU-only runs and labeler-quality studies).

  --lora=ADAPTER_DIR    hf/vllm: an adapter of llm_labeler.tune; its manifest is checked (files,
                        template version, k, chat template; hf: base weights and tokenizer)
                        before anything is written (llm_labeler.lora)
  --permutations=P      score every request under P rotated candidate orders and average the
                        label probabilities back onto the items (llm_labeler.debias; P x cost)
  --history=H           prompts show the newest H history items (default: with --lora the
                        adapter's tuning window, so labeling prompts are shaped as its tuning
                        prompts; else all the request holds)
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import time
import zlib

from jaxrec import faults, shards
from jaxrec.config import nested, option
from jaxrec.errors import ConfigError, DataError, JaxrecError
from jaxrec.oracle_config import OracleConfig
from llm_labeler.backends import BACKENDS
from llm_labeler.prompts import (TEMPLATE_VERSION, YESNO_TEMPLATE_VERSION, check_template,
                                 has_none, is_yesno, prompts_per_request)


@dataclasses.dataclass(frozen=True)
class LabelConfig:
  """`python -m llm_labeler.label`'s config; its options are the flags (jaxrec.config)."""
  requests: str = option("", "request shard directory")
  out: str = option("", "label shard directory (created; resumed if it exists)")
  backend: str = option("oracle", "labeler backend", choices=BACKENDS)
  env: str = option("", "env directory: the oracle's judge; catalog fallback")
  model: str = option("", "vllm/hf: local model directory (hf: or a .gguf file)")
  lora_path: str = option("", "vllm: LoRA adapter directory, unchecked (prefer --lora)")
  lora: str = option("", "hf/vllm: adapter directory written by llm_labeler.tune (manifest "
                     "checked against the model, template and k)")
  permutations: int = option(1, "candidate orders averaged per request (position debiasing)")
  template: str = option("", "prompt template: '' = the requests' (with --lora: the adapter's "
                         "if it is yesno-v1); yesno-v1 = one Yes/No prompt per candidate of "
                         "Table 1 requests")
  history: int = option(0, "newest history items each prompt shows (0: with --lora the "
                        "adapter's tuning window, else all the request holds)")
  tensor_parallel_size: int = option(1, "vllm: GPUs per model")
  max_num_seqs: int = option(256, "vllm: concurrent sequences")
  dtype: str = option("auto", "model dtype (auto, bfloat16, float16, float32)")
  gpu_memory_utilization: float = option(0.9, "vllm: share of accelerator memory for weights + "
                                         "KV cache")
  max_model_len: int = option(0, "vllm: context cap (0 = model)")
  constraint: str = option("tokens", "vllm: allowed_token_ids (tokens) or structured outputs "
                           "(choice)", choices=("tokens", "choice"))
  prefix_caching: bool = option(True, "vllm: reuse the KV cache of the shared prompt prefix")
  enforce_eager: bool = option(False, "vllm: no torch.compile / graphs (fast start; CPU tests)")
  chat_template: bool = option(False, "wrap the prompt in the tokenizer's chat template "
                               "(instruct models)")
  batch_size: int = option(16, "hf: prompts per forward pass")
  device: str = option("cpu", "hf: torch device (cpu, cuda, cuda:N)")
  oracle: OracleConfig = nested(OracleConfig(), "oracle_")
  seed: int = option(0, "seed (oracle sampling, vllm)")
  num_workers: int = option(1, "labeler processes sharing --out")
  worker_id: int = option(0, "this process's index in 0..W-1")
  follow: bool = option(False, "poll for new shards until DIR/DONE")
  poll_seconds: float = option(2.0, "--follow: seconds between polls")
  max_shards: int = option(0, "stop after this many shards (0 = all)")

  def validate(self) -> None:
    if not self.requests or not self.out:
      raise ConfigError("--requests and --out are required")
    if os.path.abspath(self.requests) == os.path.abspath(self.out):
      raise ConfigError("--out must differ from --requests (label shards take the request "
                        "shards' names)")
    if self.backend not in BACKENDS:
      raise ConfigError(f"--backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
    if self.backend == "oracle" and not self.env:
      raise ConfigError("--backend=oracle needs --env (the env directory whose train user "
                        "model judges)")
    if self.backend in ("vllm", "hf") and not self.model:
      raise ConfigError(f"--backend={self.backend} needs --model (a local model path)")
    if self.num_workers < 1 or not 0 <= self.worker_id < self.num_workers:
      raise ConfigError(f"need 0 <= --worker_id < --num_workers, got {self.worker_id} of "
                        f"{self.num_workers}")
    if not re.fullmatch(r"cpu|cuda(:\d+)?", self.device):
      raise ConfigError(f"--device must be cpu, cuda or cuda:N, got {self.device!r}")
    if self.lora and (self.backend not in ("hf", "vllm") or self.lora_path):
      raise ConfigError("--lora needs --backend=hf or vllm, and not --lora_path as well")
    if self.permutations < 1:
      raise ConfigError(f"--permutations must be >= 1, got {self.permutations}")
    if self.template not in ("", YESNO_TEMPLATE_VERSION):
      raise ConfigError(f"--template must be empty (the requests' template) or "
                        f"{YESNO_TEMPLATE_VERSION}, got {self.template!r}")
    if self.template and self.backend == "oracle":
      raise ConfigError("--template is for the model backends (the oracle reads no prompt)")
    if self.history < 0 or (self.history and self.backend == "oracle"):
      raise ConfigError(f"--history must be >= 0, and is for the model backends (the oracle "
                        f"reads the env's whole history); got {self.history} with "
                        f"--backend={self.backend}")
    if self.batch_size < 1 or self.poll_seconds <= 0 or self.max_shards < 0:
      raise ConfigError("--batch_size and --poll_seconds must be positive, --max_shards >= 0")


def worker_of(name: str, num_workers: int) -> int:
  """The worker that labels shard `name`: its trailing number mod W (round robin over
  "requests-00007"-style names), else a CRC32 of the name; stable as new shards appear."""
  m = re.search(r"(\d+)$", name)
  return (int(m.group(1)) if m else zlib.crc32(name.encode())) % num_workers


def load_catalog(cfg: LabelConfig, request_meta: dict) -> shards.Catalog:
  """The requests' item catalog: DIR/catalog.npz, else the dataset of --env."""
  if os.path.exists(os.path.join(cfg.requests, shards.CATALOG)) or not cfg.env:
    cat = shards.read_catalog(cfg.requests)
  else:
    from jaxrec.labeling import catalog_of_env
    cat = catalog_of_env(cfg.env)
  want = request_meta.get("fingerprint")
  if want is not None and cat.fingerprint != want:
    raise DataError(f"{cfg.requests}: requests are of dataset fingerprint {want}, the catalog "
                    f"is {cat.fingerprint} ({cat.dataset})")
  return cat


class Windowed:
  """A backend shown only the newest `history` items of each request (right-aligned, so the
  last columns): a LoRA adapter then sees prompts shaped as the ones it was tuned on."""

  def __init__(self, backend, history: int):
    self.inner, self.history = backend, history
    self.name, self.model = backend.name, backend.model
    self.meta = dict(backend.meta, history=history)

  @property
  def prompt_tokens(self) -> int:
    return self.inner.prompt_tokens

  def label(self, requests, shard: str = ""):
    return self.inner.label(requests._replace(history=requests.history[:, -self.history:]),
                            shard)


def prompt_history(cfg: LabelConfig) -> int:
  """History items a prompt shows: --history, else the adapter's tuning window, else 0 (all)."""
  if cfg.history or not cfg.lora or cfg.backend == "oracle":
    return cfg.history
  from llm_labeler import lora
  return int(lora.read_manifest(cfg.lora).get("history", 0))


def make_backend(cfg: LabelConfig, request_meta: dict):
  """Builds the backend (imports vLLM / transformers / the env only now), shown the newest
  `prompt_history` items of each request, debiased over --permutations candidate orders when
  P > 1."""
  template = prompt_template(cfg, request_meta)
  if cfg.permutations > 1 and is_yesno(template):
    raise ConfigError(f"--permutations={cfg.permutations}: the {YESNO_TEMPLATE_VERSION} "
                      "template shows one candidate per prompt, there is no order to permute")
  backend = _make_backend(cfg, request_meta, template)
  history = prompt_history(cfg)
  if history:
    backend = Windowed(backend, history)
  if cfg.permutations > 1:
    from llm_labeler.debias import Debiased, shifts
    shifts(int(request_meta["k"]), cfg.permutations)  # P <= k
    backend = Debiased(backend, cfg.permutations)
  return backend


def template_of(request_meta: dict) -> str:
  """The prompt template the requests ask for (their manifest's template_version; Table 1
  when absent), refused if this labeler does not render it."""
  return check_template(request_meta.get("template_version", TEMPLATE_VERSION))


def prompt_template(cfg: LabelConfig, request_meta: dict) -> str:
  """The template the model is prompted with: --template, else the adapter's when it is the
  Yes/No one, else the requests' (`template_of`). The Yes/No template scores Table 1
  requests only (it offers None, LEA's requests do not)."""
  requested = template_of(request_meta)
  if cfg.backend == "oracle":
    return requested
  template = cfg.template
  if not template and cfg.lora:
    from llm_labeler import lora
    tuned = lora.read_manifest(cfg.lora).get("template_version")
    template = tuned if tuned == YESNO_TEMPLATE_VERSION else ""
  if not template or template == requested:
    return requested
  if requested != TEMPLATE_VERSION:
    raise ConfigError(f"--template={template} scores Table 1 requests ({TEMPLATE_VERSION}); "
                      f"{cfg.requests} asks for {requested}")
  return template


def _make_backend(cfg: LabelConfig, request_meta: dict, template: str):
  """`template`: `prompt_template(cfg, request_meta)`, resolved once by `make_backend`."""
  k = int(request_meta["k"])
  if cfg.backend == "oracle":
    from jaxrec.labeling import make_oracle_backend
    oracle_cfg = cfg.oracle
    if not has_none(template):  # no None option: the judge always picks a candidate
      oracle_cfg = dataclasses.replace(oracle_cfg, none_threshold=float("-inf"))
    backend = make_oracle_backend(cfg.env, oracle_cfg, cfg.seed)
    want = request_meta.get("fingerprint")
    if want is not None and backend.fingerprint != want:
      raise DataError(f"--env {cfg.env}: built from dataset fingerprint {backend.fingerprint}, "
                      f"the requests are of {want}")
    return backend
  catalog = load_catalog(cfg, request_meta)
  if cfg.backend == "hf":
    from llm_labeler.backends.hf_backend import HFBackend
    return HFBackend(cfg.model, catalog, k, cfg.batch_size, cfg.chat_template,
                     "float32" if cfg.dtype == "auto" else cfg.dtype, cfg.device, lora=cfg.lora,
                     template=template)
  from llm_labeler.backends.vllm_backend import VLLMBackend, VLLMConfig
  if cfg.lora:  # vLLM: files, template and k are checked; the base weights are not (docs)
    from llm_labeler import lora
    lora.check_files(cfg.lora, k, cfg.chat_template, template=template)
  return VLLMBackend(VLLMConfig(
      model=cfg.model, lora_path=cfg.lora or cfg.lora_path, tensor_parallel_size=cfg.tensor_parallel_size,
      max_num_seqs=cfg.max_num_seqs, dtype=cfg.dtype,
      gpu_memory_utilization=cfg.gpu_memory_utilization, max_model_len=cfg.max_model_len,
      constraint=cfg.constraint, enable_prefix_caching=cfg.prefix_caching,
      enforce_eager=cfg.enforce_eager, chat_template=cfg.chat_template, seed=cfg.seed),
      catalog, k, template)


def label_meta(backend, request_meta: dict, template: str = "") -> dict:
  """What every label shard of --out records (CONSISTENT_KEYS must agree across shards).
  `template`: the prompt template the backend renders (`prompt_template`), else the
  requests'."""
  return {"backend": backend.name, "model": backend.model,
          "template_version": template or template_of(request_meta),
          "k": int(request_meta["k"]), "dataset": request_meta.get("dataset"),
          "fingerprint": request_meta.get("fingerprint"),
          "history_len": request_meta.get("history_len"),
          "num_items": request_meta.get("num_items"), "backend_meta": backend.meta}


def prompts_per_row(label_meta: dict) -> int:
  """Prompts a model reads per labeled request of a job with this label meta
  (`prompts.prompts_per_request`); the oracle reads none, its rate counts requests."""
  if label_meta["backend"] == "oracle":
    return 1
  return prompts_per_request(label_meta["template_version"], int(label_meta["k"]))


class _Progress:
  """Cumulative rates and the ETA over the rows still pending."""

  def __init__(self, log):
    self.log, self.start = log, None
    self.rows = self.invalid = self.shards = 0

  def begin(self) -> None:
    """Starts the clock (after the backend is built: loading a model is not labeling)."""
    if self.start is None:
      self.start = time.perf_counter()

  def update(self, name: str, rows: int, invalid: int, tokens: int, pending_rows: int,
             is_oracle: bool, prompts_per_row: int = 1) -> None:
    """`prompts_per_row`: the prompts one request becomes (k for the Yes/No template)."""
    self.rows += rows
    self.invalid += invalid
    self.shards += 1
    dt = max(time.perf_counter() - self.start, 1e-9)
    rate = self.rows / dt
    tok = "n/a (oracle)" if is_oracle else f"{tokens / dt:.4g}"
    self.log(f"labeled {name}: {rows} rows | total {self.rows} rows in {self.shards} shards, "
             f"{rate:.4g} requests/s = {rate * prompts_per_row:.4g} prompts/s, {tok} prompt "
             f"tokens/s, invalid {self.invalid} "
             f"({self.invalid / max(self.rows, 1):.2%}), ETA {pending_rows / rate:.0f}s for "
             f"{pending_rows} known rows")


def label_directory(cfg: LabelConfig, log=print, backend=None) -> dict:
  """Labels the pending shards of cfg.requests into cfg.out (see the module docstring).
  SIGTERM stops it after the shard being labeled is committed (faults.Preempted).

  Returns {"labeled": [names], "skipped": n already labeled, "rows": n, "invalid": n}.
  `backend` may be passed pre-built (tests, benchmarks); otherwise it is built on the first
  pending shard, so a finished job reruns without loading a model.
  """
  cfg.validate()
  if not cfg.follow and not os.path.isdir(cfg.requests):
    raise DataError(f"--requests {cfg.requests}: no such directory")
  created = not os.path.exists(cfg.out)
  if cfg.lora and os.path.isdir(cfg.requests):  # refuse a wrong adapter before writing
    from llm_labeler import lora
    request_meta = shards.read_manifest(cfg.requests)["meta"]
    if request_meta.get("k") is not None:
      lora.check_files(cfg.lora, int(request_meta["k"]), cfg.chat_template,
                       template=prompt_template(cfg, request_meta))
  os.makedirs(cfg.out, exist_ok=True)
  for fn in shards.remove_stale_temps(cfg.out):
    log(f"removed {fn}, left by a killed labeler")
  if shards.repair_manifest(cfg.out):
    log(f"{cfg.out}/{shards.MANIFEST}: brought up to date with the shard records (a labeler "
        "was killed before updating it)")
  progress = _Progress(log)
  labeled, skipped, meta = [], 0, None
  announced = False
  with faults.Preemption() as preemption:
    while True:
      done_marker = shards.is_done(cfg.requests)  # read before listing: no shard follows it
      manifest = shards.read_manifest(cfg.requests)
      mine = [n for n in sorted(manifest["shards"]) if worker_of(n, cfg.num_workers) ==
              cfg.worker_id]
      have = set(shards.list_shards(cfg.out))
      pending = [n for n in mine if n not in have]
      if not announced and mine:
        skipped = len(mine) - len(pending)
        log(f"worker {cfg.worker_id}/{cfg.num_workers}: {len(mine)} shards, {skipped} already "
            f"labeled in {cfg.out}")
        announced = True
      for i, name in enumerate(pending):
        if cfg.max_shards and len(labeled) >= cfg.max_shards:
          return _summary(labeled, skipped, progress)
        if backend is None:
          try:
            backend = make_backend(cfg, manifest["meta"])
          except JaxrecError:  # e.g. an adapter of another base model: leave nothing behind
            if created and set(os.listdir(cfg.out)) <= {".lock"}:
              shutil.rmtree(cfg.out, ignore_errors=True)
            raise
          if backend.name == "oracle":
            log("backend oracle: a SIMULATED judge on the env's user model, not an LLM")
        if meta is None:
          meta = label_meta(backend, manifest["meta"], prompt_template(cfg, manifest["meta"]))
          shards.check_meta(cfg.out, meta, shards.directory_meta(cfg.out))
        progress.begin()
        req = shards.read_requests(cfg.requests, name)
        lab = backend.label(req, name)
        faults.failpoint("label.labeled")
        try:
          shards.write_labels(cfg.out, shards.label_name(name), lab, meta)
        except shards.ShardExistsError:
          log(f"{name}: labeled by another process meanwhile; kept that label shard")
          continue
        labeled.append(name)
        pending_rows = sum(manifest["shards"][n]["rows"] for n in pending[i + 1:])
        progress.update(name, len(req.session), int((~lab.valid).sum()), backend.prompt_tokens,
                        pending_rows, backend.name == "oracle", prompts_per_row(meta))
        _check_preempted(preemption, cfg, f"after committing {name}")
      if not cfg.follow or (done_marker and not pending):
        return _summary(labeled, skipped, progress)
      if not pending:
        time.sleep(cfg.poll_seconds)
        _check_preempted(preemption, cfg, "while waiting for request shards")


def _check_preempted(preemption, cfg: LabelConfig, when: str) -> None:
  if preemption.requested:
    raise faults.Preempted(f"{cfg.out}: labeler stopped {when} (every committed label shard "
                           "is complete); rerun the same command to label the rest")


def _summary(labeled, skipped, progress) -> dict:
  return {"labeled": labeled, "skipped": skipped, "rows": progress.rows,
          "invalid": progress.invalid}
