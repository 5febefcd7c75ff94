"""KL against the compact teacher cache, perplexity, and the shared forward pass."""

import math

import pytest
import torch
from transformers import AutoModelForCausalLM

from paretopress.evaluators.forward import TailSample, compact, estimated, head_logits_at, head_problem
from paretopress.evaluators.metrics import score
from paretopress.evaluators.teacher import compute_teacher, kl_per_token
from paretopress.spaces.depth import DepthSpace
from paretopress.spaces.genome import Genome


@pytest.fixture(scope="module")
def model(tiny_model):
    return AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def tokens(model):
    return torch.randint(0, model.config.vocab_size, (6, 24), generator=torch.Generator().manual_seed(0))


def at_teacher_ids(student_logprobs, tokens, teacher):
    return compact(student_logprobs.clone(), tokens, teacher.top_ids.long())


def exact_kl(teacher_logprobs, student_logprobs):
    return (teacher_logprobs.exp() * (teacher_logprobs - student_logprobs)).sum(-1)


def test_dense_model_has_zero_kl_and_exact_perplexity(model, tokens):
    teacher = compute_teacher(model, tokens, top_k=8, batch_size=4)
    values = score(model, tokens, teacher, ("kl", "ppl", "params"), batch_size=4)
    assert abs(values["kl"]) < 1e-6
    with torch.inference_mode():
        loss = model(input_ids=tokens, labels=tokens, use_cache=False).loss
    assert math.isclose(values["ppl"], math.exp(loss.item()), rel_tol=1e-5)
    assert values["params"] == sum(p.numel() for p in model.parameters())


def test_batching_does_not_change_values(model, tokens):
    teacher = compute_teacher(model, tokens, top_k=8, batch_size=6)
    space = DepthSpace(model, "block", drop=2)
    with space.applied(model, Genome((1, 0, 0, 1, 0, 0))):
        one = score(model, tokens, teacher, ("kl", "ppl"), batch_size=6)
        many = score(model, tokens, teacher, ("kl", "ppl"), batch_size=1)
    assert one["kl"] > 0
    assert math.isclose(one["kl"], many["kl"], rel_tol=1e-4)
    assert math.isclose(one["ppl"], many["ppl"], rel_tol=1e-5)


def test_topk_kl_is_a_lower_bound_that_tightens_with_k(model, tokens):
    with torch.inference_mode():
        dense = torch.log_softmax(model(input_ids=tokens, use_cache=False).logits, -1)
        space = DepthSpace(model, "block", drop=3)
        with space.applied(model, Genome((0, 1, 1, 0, 1, 0))):
            student = torch.log_softmax(model(input_ids=tokens, use_cache=False).logits, -1)
    exact = exact_kl(dense, student)
    previous = torch.zeros_like(exact)
    for top_k in (1, 16, 64, 256):
        teacher = compute_teacher(model, tokens, top_k=top_k, batch_size=6)
        approx = kl_per_token(teacher, at_teacher_ids(student, tokens, teacher))
        assert torch.all(approx <= exact + 1e-6)
        assert approx.mean() >= previous.mean() - 1e-7
        previous = approx
    assert previous.mean() > 0.5 * exact.mean()


def test_full_vocabulary_topk_is_exact(model, tokens):
    with torch.inference_mode():
        dense = torch.log_softmax(model(input_ids=tokens, use_cache=False).logits, -1)
    student = torch.log_softmax(torch.randn_like(dense), -1)
    teacher = compute_teacher(model, tokens, top_k=model.config.vocab_size, batch_size=6)
    approx = kl_per_token(teacher, at_teacher_ids(student, tokens, teacher))
    assert torch.allclose(approx, exact_kl(dense, student), atol=1e-4)


def test_compact_view_matches_log_softmax(model, tokens):
    logits = torch.randn(2, 5, 11, generator=torch.Generator().manual_seed(1))
    ids = torch.tensor([3, 7])[None, None].expand(2, 5, 2)
    out = compact(logits.clone(), tokens[:2, :5] % 11, ids)
    logprobs = torch.log_softmax(logits, -1)
    assert torch.allclose(out.top_logprobs, logprobs[..., [3, 7]], atol=1e-6)
    rest = logprobs[..., [i for i in range(11) if i not in (3, 7)]].logsumexp(-1)
    assert torch.allclose(out.rest_logprob, rest, atol=1e-6)
    targets = (tokens[:2, 1:5] % 11)[..., None]
    assert torch.allclose(out.next_logprobs, logprobs[:, :-1].gather(-1, targets).squeeze(-1), atol=1e-6)


def test_the_head_estimate_is_exact_when_the_sample_is_the_whole_vocabulary(model, tokens):
    """``estimated`` from the final hidden states equals ``compact`` of the full logits when nothing is sampled."""
    teacher = compute_teacher(model, tokens, top_k=8, batch_size=6)
    space = DepthSpace(model, "block", 2)
    with torch.inference_mode(), space.applied(model, Genome((0, 1, 0, 0, 1, 0))) as candidate:
        hidden = candidate.get_decoder()(input_ids=tokens, use_cache=False).last_hidden_state
        logits = candidate(input_ids=tokens, use_cache=False).logits.float()
        full = compact(logits, tokens, teacher.top_ids.long())
        whole = estimated(hidden, candidate.get_output_embeddings(), tokens, teacher.top_ids.long(),
                          TailSample(model.config.vocab_size, model.config.vocab_size))
        sampled = estimated(hidden, candidate.get_output_embeddings(), tokens, teacher.top_ids.long(),
                            TailSample(model.config.vocab_size, 64))
    for a, b in zip((whole.top_logprobs, whole.rest_logprob, whole.next_logprobs),
                    (full.top_logprobs, full.rest_logprob, full.next_logprobs), strict=True):
        assert torch.allclose(a, b, atol=1e-4)
    exact = kl_per_token(teacher, full).mean()
    assert kl_per_token(teacher, sampled).mean() == pytest.approx(float(exact), rel=0.2)  # 64 of 320 entries
    assert head_problem(model) is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])  # the sampled product, and the gathered rows
def test_headhead_logits_at_given_ids_are_the_dot_products(dtype):
    generator = torch.Generator().manual_seed(0)
    rows, weight = torch.randn(40, 16, generator=generator), torch.randn(300, 16, generator=generator, dtype=dtype)
    ids = torch.stack([torch.randperm(300, generator=generator)[:7] for _ in range(40)])  # distinct, unsorted
    expected = torch.einsum("nkh,nh->nk", weight[ids].double(), rows.double())
    assert torch.allclose(head_logits_at(rows, weight, ids, chunk=16).double(), expected, atol=1e-4)
