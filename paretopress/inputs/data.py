"""Text for calibration and held-out evaluation: the built-in Wikipedia sample or any `datasets` source.

Calibration text builds the levels and scores candidates during the search; held-out text only reports.
The two are split by document, so a held-out number never rests on text the search has seen.
"""

from __future__ import annotations

import bz2
import hashlib
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import datasets
import mwparserfromhell
import torch
from datasets.packaged_modules import _PACKAGED_DATASETS_MODULES
from mwparserfromhell.nodes import Node, Tag, Wikilink

from paretopress.inputs.cache import cache_dir
from paretopress.kernel.errors import UserError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

WIKI_SAMPLE = "wiki-sample"
NEWS_SAMPLE = "lee-news"  # another domain for held-out confirmation: 300 Australian news articles (Lee corpus)

_GENSIM = "gensim==4.4.0"
_GENSIM_WHEEL_GLOB = "gensim-4.4.0-*.whl"
_WIKI_MEMBER = "gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
# The Lee background corpus (Lee, Pincombe and Welsh, 2005): ABC news articles, one per line, Latin-1
_NEWS_MEMBER = "gensim/test/test_data/lee_background.cor"
# Bump the version when the cleaning changes, so that an old cache is not read as the new text.
_WIKI_CACHE = "articles-v1.jsonl"
_ATTRIBUTION = """\
The text in {cache} is taken from English Wikipedia (https://en.wikipedia.org/) and is licensed under the
Creative Commons Attribution-ShareAlike 4.0 International License (CC BY-SA 4.0,
https://creativecommons.org/licenses/by-sa/4.0/). It was taken from the test data of gensim 4.4.0
({member})
and converted to plain text (markup, references, tables, images and categories removed).

Articles (title and page address; the authors are listed in each page's history):
"""
# Markup whose text is not prose: citations, tables, galleries, and links that place files or categories.
_DROPPED_TAGS = {"ref", "table", "gallery"}
_DROPPED_LINK_PREFIXES = ("file:", "image:", "media:", "category:")
# Lines that strip_code leaves behind from tables (rows, headers, captions), category or file links, and image
# options of links that it could not parse ("thumb|250px|caption").
_JUNK_LINE = re.compile(
    r"^(?:\{\||[|!+]|(?:Category|File|Image):)"
    r"|(?:^|\|)(?:thumb|thumbnail|frame|frameless|upright|left|right|\d+px)(?:\||$)"
)
_TOKENIZE_BATCH = 256


@dataclass(frozen=True)
class Documents:
    """Documents split into calibration and held-out text; the split is by whole document."""

    calibration: list[str]  # documents used for building levels and fitness
    heldout: list[str]  # documents used for reporting; never overlaps calibration
    fingerprint: str  # short hex hash of the source spec + contents, for cache keys


def load_documents(source: str | dict, heldout_fraction: float = 0.1) -> Documents:
    """Load documents and split them deterministically into calibration and held-out documents.

    ``source`` is a built-in alias (``"wiki-sample"``, or ``"lee-news"`` for text of another domain) or a dict of
    ``datasets.load_dataset`` arguments plus optional ``"text_field"`` (default ``"text"``) and ``"split"``
    (default ``"train"``), e.g.
    ``{"path": "text", "data_files": ["a.txt", "b.txt"], "sample_by": "document"}``.
    Documents are stripped; empty and repeated documents are dropped, so one text cannot land on both sides.
    Held-out takes the documents whose text hashes rank lowest (not random state, nor position), so the split
    does not depend on file order; within each side the documents keep the source's order.
    Held-out gets ``round(heldout_fraction * n)`` documents, at least one when there are two or more, and
    calibration is never empty.
    """
    if not 0 < heldout_fraction < 1:
        raise UserError(f"heldout_fraction must be between 0 and 1 (exclusive), not {heldout_fraction}")
    if isinstance(source, str):
        if source not in BUILT_IN:
            raise UserError(
                f"unknown data source {source!r}: use {' or '.join(map(repr, BUILT_IN))} "
                "or a mapping of datasets.load_dataset arguments"
            )
        raw = BUILT_IN[source]()
    else:
        raw = _dataset_texts(source)
    texts = list(dict.fromkeys(text.strip() for text in raw if text and text.strip()))
    if not texts:
        raise UserError(f"data source {_describe(source)} has no non-empty documents")
    count = min(len(texts) - 1, max(1, round(heldout_fraction * len(texts))))
    ranked = sorted(range(len(texts)), key=lambda i: hashlib.sha256(texts[i].encode()).digest())
    heldout_ids = set(ranked[:count])
    calibration = [text for i, text in enumerate(texts) if i not in heldout_ids]
    heldout = [text for i, text in enumerate(texts) if i in heldout_ids]
    log.info("data: %d documents, %d calibration, %d held out", len(texts), len(calibration), len(heldout))
    digest = hashlib.sha256(json.dumps([source, calibration, heldout], sort_keys=True, default=str).encode())
    return Documents(calibration=calibration, heldout=heldout, fingerprint=digest.hexdigest()[:16])


def pack_samples(
    texts: list[str], tokenizer: PreTrainedTokenizerBase, seq_len: int, count: int
) -> torch.Tensor:
    """``count`` samples of ``seq_len`` tokens from the concatenated documents, LongTensor [count, seq_len].

    Each document is followed by the tokenizer's EOS token when it has one (no other special tokens), so a sample
    that crosses a document boundary shows the model where one text ends; each sample starts with the BOS token
    where the tokenizer starts every text with one (``bos_prefix``), as the model saw its training text. The token
    stream is cut into non-overlapping chunks, and the samples are the chunks at the middles of ``count`` equal
    strata: deterministic, and spread over all documents rather than taken from the first ones.
    """
    eos = [] if tokenizer.eos_token_id is None else [tokenizer.eos_token_id]
    bos = bos_prefix(tokenizer)
    body = seq_len - len(bos)
    pieces = []
    for start in range(0, len(texts), _TOKENIZE_BATCH):
        batch = tokenizer(texts[start : start + _TOKENIZE_BATCH], add_special_tokens=False, verbose=False)
        pieces.extend(torch.tensor(ids + eos, dtype=torch.long) for ids in batch["input_ids"])
    tokens = torch.cat(pieces) if pieces else torch.empty(0, dtype=torch.long)
    available = tokens.numel() // body
    if available < count:
        raise UserError(
            f"{count} samples of {seq_len} tokens need {count * body} tokens, but the text has "
            f"{tokens.numel()} ({available} samples): give more text, or fewer or shorter samples"
        )
    chunks = tokens[: available * body].view(available, body)[[(2 * i + 1) * available // (2 * count)
                                                               for i in range(count)]]
    return torch.cat([torch.tensor(bos, dtype=torch.long).expand(count, len(bos)), chunks], dim=1)


def bos_prefix(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """``[BOS]`` where the tokenizer starts every text with its BOS token (Gemma, Llama 2/3), else ``[]`` (SmolLM2,
    GPT-2): a model trained with one measures out of distribution without it."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return []
    return [bos] if tokenizer("a", add_special_tokens=True)["input_ids"][:1] == [bos] else []


def _describe(source: str | dict) -> str:
    """The source in a few words for a one-line error: the alias or the dataset path, not every data file."""
    return repr(source if isinstance(source, str) else source.get("path"))


def _dataset_texts(source: dict) -> list[str]:
    """The text column of one split of a `datasets` source; every failure to load it is the user's to fix."""
    args = dict(source)
    if args.get("path") in _PACKAGED_DATASETS_MODULES and not (args.get("data_files") or args.get("data_dir")):
        # datasets would read every file of the current folder as this format
        raise UserError(f"data source {_describe(source)} is a file format: name the files with data_files")
    text_field = args.pop("text_field", "text")
    split = args.pop("split", "train")
    datasets.disable_progress_bars()  # stderr holds our progress line and one-line errors, nothing else
    datasets.logging.set_verbosity_error()
    try:
        dataset = datasets.load_dataset(**args, split=split)
    except (OSError, ValueError, TypeError, datasets.exceptions.DatasetsError) as error:
        # DatasetGenerationError only says that an error occurred while generating; its cause says which.
        reason = f"{error} ({error.__cause__})" if error.__cause__ else str(error)
        raise UserError(f"cannot load data source {_describe(source)}: {' '.join(reason.split())}") from error
    if not isinstance(dataset, datasets.Dataset):
        kind = type(dataset).__name__
        raise UserError(f"data source {_describe(source)} must give one split as a table, not a {kind}")
    if text_field not in dataset.column_names:
        raise UserError(
            f"data source {_describe(source)} has no field {text_field!r} "
            f"(fields: {', '.join(dataset.column_names)}); name the text field with text_field"
        )
    return [text for text in dataset[text_field] if isinstance(text, str)]


def _wiki_articles() -> list[dict[str, str]]:
    """The cleaned articles of the wiki sample as {"title", "text"}: built once, then read from the cache."""
    folder = cache_dir(WIKI_SAMPLE)
    path = folder / _WIKI_CACHE
    if not path.exists():
        started = time.perf_counter()
        articles = _clean_articles(_gensim_wheel())
        notice = _ATTRIBUTION.format(cache=_WIKI_CACHE, member=_WIKI_MEMBER) + "".join(
            f"- {a['title']}: https://en.wikipedia.org/wiki/{a['title'].replace(' ', '_')}\n"
            for a in articles
        )
        _write_atomic(folder / "ATTRIBUTION.txt", notice)
        _write_atomic(path, "".join(json.dumps(a, ensure_ascii=False) + "\n" for a in articles))
        megabytes = sum(len(a["text"].encode()) for a in articles) / 1e6
        elapsed = time.perf_counter() - started
        log.info("%s: %d articles, %.2f MB of text, cached in %s (%.1f s)",
                 WIKI_SAMPLE, len(articles), megabytes, folder, elapsed)
    with path.open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines]


def _news_articles() -> list[str]:
    """The Lee corpus' news articles, read straight out of the gensim wheel (small and already plain text)."""
    with zipfile.ZipFile(_gensim_wheel()) as archive:
        return archive.read(_NEWS_MEMBER).decode("latin-1").splitlines()


BUILT_IN = {WIKI_SAMPLE: lambda: [article["text"] for article in _wiki_articles()], NEWS_SAMPLE: _news_articles}


def _gensim_wheel() -> Path:
    """The gensim 4.4.0 wheel, downloaded once (never installed): its test data holds the wiki sample."""
    folder = cache_dir("downloads")
    wheels = sorted(folder.glob(_GENSIM_WHEEL_GLOB))
    if wheels:
        return wheels[0]
    log.info("downloading the %s wheel (for its Wikipedia test file) into %s", _GENSIM, folder)
    # pip writes into a private folder first, so a killed download never leaves a half wheel in the cache.
    with tempfile.TemporaryDirectory(dir=folder) as staging:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   "--disable-pip-version-check", _GENSIM, "-d", staging]
        result = subprocess.run(command, capture_output=True, text=True)
        downloaded = sorted(Path(staging).glob(_GENSIM_WHEEL_GLOB))
        if result.returncode != 0 or not downloaded:
            last = (result.stderr.strip().splitlines() or ["no wheel was downloaded"])[-1]
            raise UserError(
                f"cannot download the {_GENSIM} wheel that holds the {WIKI_SAMPLE} text "
                f"(pip download: {last}); use a datasets source as data instead"
            )
        wheel = folder / downloaded[0].name
        os.replace(downloaded[0], wheel)
    return wheel


def _clean_articles(wheel: Path) -> list[dict[str, str]]:
    """Main-namespace, non-redirect pages of the MediaWiki dump in the wheel, as plain text."""
    articles = []
    with zipfile.ZipFile(wheel) as archive, archive.open(_WIKI_MEMBER) as packed, bz2.open(packed) as xml:
        for _, element in ET.iterparse(xml):
            if _local(element.tag) != "page":
                continue
            fields = {_local(child.tag): child for child in element}
            if fields["ns"].text == "0" and "redirect" not in fields:
                revision = {_local(child.tag): child for child in fields["revision"]}
                text = _plain_text(revision["text"].text or "")
                if text:
                    articles.append({"title": fields["title"].text, "text": text})
            element.clear()
    return articles


def _local(tag: str) -> str:
    """An XML tag without its namespace, so any MediaWiki export schema version parses."""
    return tag.rpartition("}")[2]


def _plain_text(wikitext: str) -> str:
    code = mwparserfromhell.parse(wikitext)
    # Top level only: removing nested nodes costs a search each, and strip_code drops templates whole anyway.
    code.nodes = [node for node in code.nodes if not _is_junk(node)]
    lines = (line.strip() for line in code.strip_code().split("\n"))
    text = "\n".join(line for line in lines if not _JUNK_LINE.search(line))
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _is_junk(node: Node) -> bool:
    if isinstance(node, Tag):
        return str(node.tag).strip().lower() in _DROPPED_TAGS
    if isinstance(node, Wikilink):
        return str(node.title).strip().lstrip(":").lower().startswith(_DROPPED_LINK_PREFIXES)
    return False


def _write_atomic(path: Path, text: str) -> None:
    """Write through a temporary file and rename it, so a killed process never leaves a half-written file."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
