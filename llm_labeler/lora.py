"""LoRA adapters written by `llm_labeler.tune`: identity of a base model, the adapter manifest,
its checks, and applying an adapter to a loaded model (the hf backend's --lora).

An adapter directory holds peft's `adapter_config.json` and `adapter_model.safetensors` and
our `manifest.json`: the base model's identity (`weights_sha256`: its parameters rounded to
bfloat16 in name order, so a GGUF file, its converted directory, and a float32 or bfloat16
load of either agree; `tokenizer_sha256`: vocabulary and special tokens), the template
version, k, whether the chat template was used, the history window, the dataset fingerprint,
the tuning flags and loss curve, and the sha256 of every adapter file. `check_files` refuses
missing or modified files and another template version or k before a model is loaded;
`check_base` refuses another base model or tokenizer once it is.
"""

from __future__ import annotations

import hashlib
import json
import os

from jaxrec.errors import ConfigError, DataError
from jaxrec.io import sha256_file
from llm_labeler.prompts import TEMPLATE_VERSION, YESNO_TEMPLATE_VERSION

MANIFEST = "manifest.json"
FORMAT = 1
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def weights_sha256(lm) -> str:
  """sha256 over the model's parameter names, shapes and values rounded to bfloat16."""
  import torch
  h = hashlib.sha256()
  for name, t in sorted(lm.state_dict().items()):
    t = t.detach().to("cpu").to(torch.bfloat16).contiguous()
    h.update(f"{name}:{tuple(t.shape)};".encode())
    h.update(t.view(torch.int16).numpy().tobytes())
  return h.hexdigest()


def tokenizer_sha256(tokenizer) -> str:
  vocab = sorted(tokenizer.get_vocab().items())
  special = sorted(str(s) for s in (getattr(tokenizer, "all_special_tokens", None) or ()))
  return hashlib.sha256(json.dumps([vocab, special]).encode()).hexdigest()


def file_hashes(directory: str) -> dict[str, str]:
  return {f: sha256_file(os.path.join(directory, f)) for f in ADAPTER_FILES}


def write_manifest(directory: str, manifest: dict) -> None:
  """The manifest with the adapter files' hashes; called on the temp directory before its
  rename, so a complete adapter directory always has one."""
  manifest = {"format": FORMAT, **manifest, "files": file_hashes(directory)}
  with open(os.path.join(directory, MANIFEST), "w") as f:
    f.write(json.dumps(manifest, indent=2) + "\n")


def read_manifest(directory: str, flag: str = "--lora") -> dict:
  """The adapter directory's manifest, its files verified (one-line DataError otherwise)."""
  if not os.path.isdir(directory):
    raise DataError(f"{flag} {directory}: no such adapter directory")
  path = os.path.join(directory, MANIFEST)
  try:
    with open(path) as f:
      manifest = json.load(f)
  except FileNotFoundError:
    raise DataError(f"{path}: missing; not an adapter written by llm_labeler.tune") from None
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise DataError(f"{path}: not valid JSON ({e.__class__.__name__})") from None
  if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
    raise DataError(f"{path}: expected a JSON object with format {FORMAT}")
  for key in ("base_model", "tokenizer_sha256", "template_version", "k", "files"):
    if key not in manifest:
      raise DataError(f"{path}: no {key!r}")
  for name in ADAPTER_FILES:
    file = os.path.join(directory, name)
    if not os.path.isfile(file):
      raise DataError(f"{file}: missing (the adapter directory is incomplete)")
    if sha256_file(file) != manifest["files"].get(name):
      raise DataError(f"{file}: sha256 differs from {MANIFEST} (corrupt or modified)")
  return manifest


def check_files(directory: str, k: int, chat_template: bool, flag: str = "--lora",
                template: str = TEMPLATE_VERSION) -> dict:
  """read_manifest plus the prompt it was tuned on: template version (`template`, the one
  the labeler will render), k, chat template."""
  m = read_manifest(directory, flag)
  path = os.path.join(directory, MANIFEST)
  # Letter prompts (Table 1, LEA's selection) are served by Table 1 adapters, as before the
  # Yes/No template; a Yes/No adapter serves Yes/No prompts only, and the other way round.
  want = template if template == YESNO_TEMPLATE_VERSION else TEMPLATE_VERSION
  if m["template_version"] != want:
    raise ConfigError(f"{path}: tuned on prompt template {m['template_version']!r}, this "
                      f"labeler renders {template!r}; tune again")
  if int(m["k"]) != k:
    raise ConfigError(f"{path}: tuned for k={m['k']} candidates, the requests have k={k}")
  if bool(m.get("chat_template", False)) != chat_template:
    raise ConfigError(f"{path}: tuned with chat_template={m.get('chat_template')}, labeling "
                      f"with --chat_template={chat_template}; use the same")
  return m


def check_base(manifest: dict, directory: str, tokenizer, lm) -> None:
  """Refuses an adapter tuned on another base model or tokenizer than (tokenizer, lm)."""
  path = os.path.join(directory, MANIFEST)
  if tokenizer_sha256(tokenizer) != manifest["tokenizer_sha256"]:
    raise ConfigError(f"{path}: tuned with another tokenizer than --model's")
  want = manifest["base_model"].get("weights_sha256")
  if weights_sha256(lm) != want:
    raise ConfigError(f"{path}: tuned on another base model ({manifest['base_model'].get('path')}"
                      f", weights sha256 {str(want)[:12]}) than --model")


def apply(lm, directory: str):
  """The base model with the adapter merged into its weights (inference cost as the base)."""
  from peft import PeftModel
  try:
    model = PeftModel.from_pretrained(lm, directory, is_trainable=False)
  except (ValueError, KeyError, RuntimeError, OSError) as e:
    raise DataError(f"{directory}: cannot load the adapter ({type(e).__name__}: "
                    f"{str(e).splitlines()[0][:200] if str(e) else ''})") from None
  merged = model.merge_and_unload()
  merged.eval()
  return merged


def describe(directory: str, manifest: dict) -> str:
  """How the label manifest names a LoRA-served model."""
  return (f"+ LoRA {os.path.abspath(directory)} (adapter sha256 "
          f"{manifest['files']['adapter_model.safetensors'][:12]})")
