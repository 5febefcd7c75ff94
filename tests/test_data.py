"""Documents and token samples: the calibration / held-out split and the packing of samples, on real files."""

import json
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from paretopress.inputs.cache import cache_dir
from paretopress.inputs.data import NEWS_SAMPLE, WIKI_SAMPLE, bos_prefix, load_documents, pack_samples
from paretopress.kernel.errors import UserError


def write_documents(folder: Path, count: int, prefix: str = "doc") -> tuple[list[Path], list[str]]:
    """One multi-line document per file, so `sample_by: document` and line-wise loading differ."""
    folder.mkdir(parents=True, exist_ok=True)
    paths, texts = [], []
    for i in range(count):
        text = f"Document {i} of {prefix}.\n\nIt has a second paragraph about topic {i * 7}."
        path = folder / f"{prefix}{i:02d}.txt"
        path.write_text(text + "\n")
        paths.append(path)
        texts.append(text)
    return paths, texts


def text_source(paths: list[Path], tmp_path: Path, **extra) -> dict:
    # A private datasets cache keeps the test off the user's ~/.cache/huggingface.
    return {"path": "text", "data_files": [str(p) for p in paths], "sample_by": "document",
            "cache_dir": str(tmp_path / "hf"), **extra}


def test_text_files_are_split_by_document(tmp_path):
    paths, texts = write_documents(tmp_path / "text", 20)
    docs = load_documents(text_source(paths, tmp_path))
    assert sorted(docs.calibration + docs.heldout) == sorted(texts)  # one document per file, none lost
    assert len(docs.heldout) == 2 and len(docs.calibration) == 18
    assert not set(docs.calibration) & set(docs.heldout)
    assert docs.calibration == [t for t in texts if t in docs.calibration]  # the files' order is kept
    assert docs.heldout == [t for t in texts if t in docs.heldout]


def test_split_is_deterministic_and_ignores_file_order(tmp_path):
    paths, _ = write_documents(tmp_path / "text", 30)
    first = load_documents(text_source(paths, tmp_path), heldout_fraction=0.2)
    assert load_documents(text_source(paths, tmp_path), heldout_fraction=0.2) == first
    reversed_order = load_documents(text_source(paths[::-1], tmp_path), heldout_fraction=0.2)
    assert set(reversed_order.heldout) == set(first.heldout)
    assert reversed_order.heldout == first.heldout[::-1]


def test_fingerprint_follows_the_contents_and_the_split(tmp_path):
    paths, _ = write_documents(tmp_path / "a", 10)
    base = load_documents(text_source(paths, tmp_path))
    other_paths, _ = write_documents(tmp_path / "b", 10, prefix="other")
    assert load_documents(text_source(other_paths, tmp_path)).fingerprint != base.fingerprint
    assert load_documents(text_source(paths, tmp_path), heldout_fraction=0.3).fingerprint != base.fingerprint
    assert len(base.fingerprint) == 16 and int(base.fingerprint, 16) >= 0


def test_lines_are_documents_without_sample_by(tmp_path):
    path = tmp_path / "lines.txt"
    path.write_text("first line\n\n   \nsecond line\nfirst line\nthird line\n")
    source = text_source([path], tmp_path)
    del source["sample_by"]
    docs = load_documents(source, heldout_fraction=0.5)
    assert sorted(docs.calibration + docs.heldout) == ["first line", "second line", "third line"]
    assert len(docs.heldout) == 2


@pytest.mark.parametrize("count, heldout", [(1, 0), (2, 1), (3, 1), (9, 1), (25, 2)])
def test_small_sources_keep_both_sides_non_empty(tmp_path, count, heldout):
    paths, _ = write_documents(tmp_path / "text", count)
    docs = load_documents(text_source(paths, tmp_path))
    assert len(docs.heldout) == heldout and len(docs.calibration) == count - heldout >= 1


def test_text_field_names_the_column(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps({"id": i, "content": f"row number {i}"}) + "\n" for i in range(5)))
    source = {"path": "json", "data_files": [str(path)], "cache_dir": str(tmp_path / "hf")}
    with pytest.raises(UserError, match=r"no field 'text'.*content"):
        load_documents(source)
    docs = load_documents({**source, "text_field": "content"})
    assert sorted(docs.calibration + docs.heldout) == [f"row number {i}" for i in range(5)]


def test_bad_sources_are_user_errors(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n  \n")
    cases = {
        "no-such-data": "unknown data source 'no-such-data'",
        "/nonexistent/file.txt": "nonexistent/file.txt",
        "empty": "no non-empty documents",
        "bad split": "Unknown split",
    }
    sources = {
        "no-such-data": "no-such-data",
        "/nonexistent/file.txt": {"path": "text", "data_files": ["/nonexistent/file.txt"]},
        "empty": text_source([empty], tmp_path),
        "bad split": text_source([empty], tmp_path, split="validation"),
    }
    for name, message in cases.items():
        with pytest.raises(UserError, match=message) as caught:
            load_documents(sources[name])
        assert "\n" not in str(caught.value)
    with pytest.raises(UserError, match="heldout_fraction"):
        load_documents(WIKI_SAMPLE, heldout_fraction=1.0)


WORDS = 4000


BOS = WORDS + 2


def counting_tokenizer(with_eos: bool, with_bos: bool = False) -> PreTrainedTokenizerFast:
    """Word-level tokenizer where word `w{j}` is token j + 2, so a token stream can be predicted exactly; with BOS,
    it starts every text with token ``BOS`` as Llama's and Gemma's do."""
    vocab = {"<eos>": 0, "<unk>": 1, **{f"w{j}": j + 2 for j in range(WORDS)}, "<bos>": BOS}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if with_bos:
        tokenizer.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", BOS)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>",
                                   eos_token="<eos>" if with_eos else None, bos_token="<bos>" if with_bos else None)


def counting_documents(count: int) -> tuple[list[str], list[int]]:
    """Documents of consecutive words (several tokenizer batches of them) and their expected token stream."""
    texts, stream, word = [], [], 0
    for i in range(count):
        length = 3 + i % 9
        texts.append(" ".join(f"w{j}" for j in range(word, word + length)))
        stream.extend(range(word + 2, word + length + 2))
        stream.append(0)  # eos, removed again below for a tokenizer without one
        word += length
    assert word <= WORDS
    return texts, stream


@pytest.mark.parametrize("with_eos", [True, False])
def test_pack_samples_takes_real_token_runs_spread_over_the_text(with_eos):
    texts, stream = counting_documents(400)
    if not with_eos:
        stream = [token for token in stream if token != 0]
    tokenizer = counting_tokenizer(with_eos)
    seq_len, count = 16, 10
    samples = pack_samples(texts, tokenizer, seq_len, count)
    assert samples.shape == (count, seq_len) and samples.dtype == torch.long
    assert torch.equal(samples, pack_samples(texts, tokenizer, seq_len, count))
    starts = []
    for row in samples.tolist():
        (start,) = [s for s in range(0, len(stream), seq_len) if stream[s : s + seq_len] == row]
        starts.append(start)  # each sample is one whole chunk of the token stream
    assert starts == sorted(set(starts))  # distinct, in text order
    assert starts[0] < len(stream) / count and starts[-1] > len(stream) * (count - 1) / count - seq_len
    assert (0 in samples) == with_eos


def test_samples_start_with_bos_where_the_tokenizer_adds_one():
    texts, stream = counting_documents(400)
    tokenizer = counting_tokenizer(with_eos=True, with_bos=True)
    assert bos_prefix(tokenizer) == [BOS] and bos_prefix(counting_tokenizer(with_eos=True)) == []
    samples = pack_samples(texts, tokenizer, 16, 10)
    assert samples.shape == (10, 16) and (samples[:, 0] == BOS).all() and not (samples[:, 1:] == BOS).any()
    for row in samples[:, 1:].tolist():  # the rest of each sample is one whole chunk of 15 tokens of the text
        assert any(stream[s : s + 15] == row for s in range(0, len(stream), 15))


def test_pack_samples_refuses_too_little_text():
    texts, stream = counting_documents(10)
    tokenizer = counting_tokenizer(with_eos=True)
    available = len(stream) // 16
    assert pack_samples(texts, tokenizer, 16, available).shape == (available, 16)  # every chunk, once each
    with pytest.raises(UserError) as caught:
        pack_samples(texts, tokenizer, 16, available + 1)
    assert f"need {(available + 1) * 16} tokens, but the text has {len(stream)} ({available} samples)" in str(
        caught.value
    )
    with pytest.raises(UserError, match="has 0"):
        pack_samples([], tokenizer, 16, 1)


@pytest.mark.real
def test_wiki_sample():
    docs = load_documents(WIKI_SAMPLE)
    folder = cache_dir(WIKI_SAMPLE)
    (cache,) = folder.glob("*.jsonl")
    with cache.open(encoding="utf-8") as lines:
        title_of = {article["text"]: article["title"] for article in map(json.loads, lines)}
    texts = docs.calibration + docs.heldout
    assert len(texts) >= 90 and len(docs.heldout) >= 9
    assert sum(len(t) for t in texts) > 2_000_000
    assert sum("[[" in t or "{{" in t or "thumb|" in t for t in texts) <= len(texts) // 20
    assert not {title_of[t] for t in docs.calibration} & {title_of[t] for t in docs.heldout}
    attribution = (folder / "ATTRIBUTION.txt").read_text()
    assert "CC BY-SA 4.0" in attribution and "gensim 4.4.0" in attribution
    assert all(title in attribution for title in title_of.values())
    assert load_documents(WIKI_SAMPLE) == docs  # the second call reads the cache


@pytest.mark.real
def test_news_sample_is_another_domain():
    news = load_documents(NEWS_SAMPLE)
    texts = news.calibration + news.heldout
    assert len(texts) == 293 and not set(news.calibration) & set(news.heldout)  # 300 lines, 7 repeated
    assert not set(texts) & set(load_documents(WIKI_SAMPLE).calibration)
    assert sum("said" in t for t in texts) > 200  # reported speech: news, not encyclopedia prose
