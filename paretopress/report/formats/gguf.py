"""``--format gguf``: one ``.gguf`` file for llama.cpp, every linear in the type its genome chose.

Linears of a gguf space are written as the exact bytes the search evaluated (``Space.gguf_tensors``); every other
tensor as a float: F32 for vectors (norms), as llama.cpp keeps them, and F16 for matrices (embeddings, and linears
of spaces whose float weights are the model: depth, sparsity with its zeros). Tensor names and the q/k row order
follow llama.cpp's converter (rotary pairs interleaved, which ``transformers`` undoes when it loads the file), as do
the architecture metadata and a byte-level BPE tokenizer's vocabulary and merges. Llama and Qwen2 models (Mistral's
sliding window has no place in llama.cpp's ``llama`` architecture, and transformers reads Qwen3 files with the
config's default head size rather than the file's); the architecture table in the README says which exports hold where.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory

import gguf
import numpy as np
import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from paretopress.evaluators.teacher import TeacherOutputs
from paretopress.inputs.models import from_gguf
from paretopress.kernel.errors import UserError
from paretopress.report import llamacpp
from paretopress.report.formats.base import FORMATS, ExportFormat
from paretopress.spaces import pruned
from paretopress.spaces.base import Space
from paretopress.spaces.genome import Genome
from paretopress.spaces.gguf_types import TYPES, TensorType

log = logging.getLogger(__name__)

FILE = "model.gguf"
# transformers model_type -> llama.cpp architecture, and whether its converter reorders q/k rows for rotary pairs
ARCHITECTURES = {"llama": (gguf.MODEL_ARCH.LLAMA, True), "qwen2": (gguf.MODEL_ARCH.QWEN2, False)}
FLOAT = TYPES["F16"]


@FORMATS.register("gguf")
class GgufFile(ExportFormat):
    name = "gguf"

    def write(self, space: Space, model: PreTrainedModel, genome: Genome, tokenizer: PreTrainedTokenizerBase,
              out: Path) -> list[Path]:
        config = model.config
        if config.model_type not in ARCHITECTURES:
            raise UserError(f"export --format gguf writes {', '.join(ARCHITECTURES)} models, not {config.model_type} "
                            "yet; use --format transformers")
        chosen = space.gguf_tensors(model, genome)  # before materialising: dropped blocks' modules still exist
        model = space.materialise(model, genome)
        if hasattr(model.config, pruned.LAYOUT):
            raise UserError("export --format gguf: this candidate's layers differ in shape (narrowed or stubbed "
                            "sub-layers), which a GGUF file of these architectures cannot state; use --format "
                            "transformers")
        _check_rope(config)
        vocabulary = _vocabulary(tokenizer, config.vocab_size)
        tensors = _tensors(model, chosen)  # every refusal above: nothing is written yet
        out.mkdir(parents=True, exist_ok=True)
        path = out / FILE
        writer = gguf.GGUFWriter(path, gguf.MODEL_ARCH_NAMES[ARCHITECTURES[config.model_type][0]])
        _metadata(writer, model)
        vocabulary.write(writer)
        for name, data, qtype in tensors:
            writer.add_tensor(name, data, raw_dtype=qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        return [path]

    def load(self, out: Path) -> nn.Module:
        return from_gguf(out, FILE).eval()

    def runtime_metrics(self, out: Path, tokens: torch.Tensor, teacher: TeacherOutputs,
                        names: tuple[str, ...]) -> dict[str, dict[str, float]]:
        if not llamacpp.available():
            log.warning("llama-cpp-python is not installed (%s): the file was not run by llama.cpp", llamacpp.INSTALL)
            return {}
        return {"llama.cpp": llamacpp.score_file(out / FILE, tokens, teacher, names, torch.get_num_threads())}


def _check_rope(config: object) -> None:
    scaling = getattr(config, "rope_scaling", None) or {}
    if scaling.get("rope_type", "default") != "default":
        raise UserError(f"export --format gguf: rope scaling {scaling.get('rope_type')!r} is not written yet; use "
                        "--format transformers")


def _metadata(writer: gguf.GGUFWriter, model: PreTrainedModel) -> None:
    """The architecture's hyperparameters, as llama.cpp and transformers read them."""
    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    writer.add_name(getattr(config, "_name_or_path", "") or config.model_type)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(_rope_theta(config)))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)


def _rope_theta(config: object) -> float:
    theta = getattr(config, "rope_theta", None)
    if theta is None:  # newer configs keep it with the rope parameters
        theta = (getattr(config, "rope_parameters", None) or {}).get("rope_theta", 10000.0)
    return theta


@dataclass(frozen=True)
class Vocabulary:
    """A byte-level BPE vocabulary as llama.cpp's ``gpt2`` tokenizer model holds it."""

    tokens: list[str]
    types: list[gguf.TokenType]
    special: gguf.SpecialVocab  # merges, special token ids, whether BOS is added

    def write(self, writer: gguf.GGUFWriter) -> None:
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre("default")
        writer.add_token_list(self.tokens)
        writer.add_token_types(self.types)
        self.special.add_to_gguf(writer, quiet=True)


def _vocabulary(tokenizer: PreTrainedTokenizerBase, vocab_size: int) -> Vocabulary:
    """Tokens by id (embedding rows no token uses as unused pads), their types, merges and special ids."""
    with TemporaryDirectory() as folder:
        tokenizer.save_pretrained(folder)
        saved = Path(folder) / "tokenizer.json"
        spec = json.loads(saved.read_text()) if saved.is_file() else {}
        if spec.get("model", {}).get("type") != "BPE":
            raise UserError("export --format gguf writes byte-level BPE tokenizers only, and this model's is not one; "
                            "use --format transformers")
        special = gguf.SpecialVocab(folder, load_merges=True, n_vocab=vocab_size)
    by_id = {index: token for token, index in tokenizer.get_vocab().items()}
    added = {token.content: token.special for token in tokenizer.added_tokens_decoder.values()}
    tokens, types = [], []
    for index in range(vocab_size):
        token = by_id.get(index)
        if token is None:
            tokens.append(f"[PAD{index}]")
            types.append(gguf.TokenType.UNUSED)
        else:
            tokens.append(token)
            types.append(gguf.TokenType.NORMAL if token not in added else
                         gguf.TokenType.CONTROL if added[token] else gguf.TokenType.USER_DEFINED)
    return Vocabulary(tokens, types, special)


def _tensors(model: PreTrainedModel, chosen: dict[nn.Module, tuple[TensorType, np.ndarray]]
             ) -> list[tuple[str, np.ndarray, gguf.GGMLQuantizationType | None]]:
    """Every tensor under its llama.cpp name with its data and type (None: float32 as it is): the chosen bytes where
    the genome chose them, floats elsewhere."""
    config = model.config
    architecture, rotary_rows = ARCHITECTURES[config.model_type]
    names = gguf.get_tensor_name_map(architecture, config.num_hidden_layers)
    tensors = []
    for key, parameter in model.state_dict().items():
        module_name, _, suffix = key.rpartition(".")
        if key == "lm_head.weight" and config.tie_word_embeddings:
            continue
        name = names.get_name(module_name)
        if name is None:
            raise UserError(f"export --format gguf: no llama.cpp name for tensor {key}; use --format transformers")
        module = model.get_submodule(module_name)
        if suffix == "weight" and module in chosen:
            tensor_type, data = chosen[module]
            qtype = tensor_type.qtype
        elif parameter.ndim == 2:
            data, qtype = FLOAT.quantize(parameter.detach().float().numpy()), FLOAT.qtype
        else:
            data, qtype = parameter.detach().float().numpy(), None
        tensors.append((f"{name}.{suffix}", _rotary_order(name, data, config) if rotary_rows else data, qtype))
    return tensors


def _rotary_order(name: str, rows: np.ndarray, config: object) -> np.ndarray:
    """q and k rows reordered as llama.cpp's converter does (each head's two rotary halves interleaved); rows are
    quantized independently, so this reorders stored bytes exactly."""
    leaf = name.rpartition(".")[2]
    if leaf not in ("attn_q", "attn_k"):
        return rows
    heads = config.num_attention_heads if leaf == "attn_q" else config.num_key_value_heads
    return rows.reshape(heads, 2, rows.shape[0] // heads // 2, *rows.shape[1:]).swapaxes(1, 2).reshape(rows.shape)
