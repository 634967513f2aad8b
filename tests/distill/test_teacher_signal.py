"""The teacher's signal reaches the student's gradient, and only through student tokens.

Real (tiny, randomly initialised) transformers Qwen3 models with a locally trained tokenizer; the
OPD method's own hooks compute the loss (the path the trainer takes). Guards against the failure of
atropos#456, where distillation was silently a no-op.
"""

from __future__ import annotations

import copy
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import torch

from madopd_distill.batch import collate, micro_batches, reduction_coefficients
from madopd_distill.methods import build_method
from madopd_distill.methods.base import MethodContext
from madopd_distill.rollout import Sample
from madopd_distill.teachers import (HFTeacher, OpenAITeacher, ScoreRequest, TokenizerMismatchError, VLLMTeacher)
from madopd_distill.trainer import student_forward

CORPUS = ["You are in the kitchen. Simon says, 'take the apple'. <action>take apple</action>",
          "To the East you see the pantry. move east, move west, open fridge, look around, inventory"] * 20


@pytest.fixture(scope="module")
def tok():
    from madopd_agents.zoo import build_tokenizer

    return build_tokenizer(CORPUS, vocab_size=300)


def tiny(tok, seed: int):
    from madopd_agents.zoo import tiny_qwen3

    return tiny_qwen3(tok, "S", seed=seed, hidden_size=32, num_hidden_layers=1, intermediate_size=64,
                      num_attention_heads=2, num_key_value_heads=1, head_dim=16)


def make_samples(tok) -> list[Sample]:
    """Two samples shaped like rollouts: prompt/env tokens (masked) around student turns (trained)."""
    out = []
    for text, student_spans in [("You are in the kitchen. take apple move east look around", [(6, 9), (11, 13)]),
                                ("Simon says, 'take the apple'. open fridge inventory", [(8, 12)])]:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        mask = [False] * len(ids)
        for a, b in student_spans:
            for t in range(a, min(b, len(ids))):
                mask[t] = True
        out.append(Sample(ids, mask, [-1.0] * len(ids), traj_index=len(out)))
    return out


def opd(teacher_model, tok, **cfg):
    ctx = MethodContext(teachers={"t": HFTeacher(teacher_model, tok, student_tokenizer=tok)}, tokenizer=tok)
    return build_method("opd", cfg, ctx)


def loss_and_grad(student, method, samples, tok):
    student.zero_grad(set_to_none=True)
    total = 0.0
    for batch in micro_batches(samples, method.cfg.reduction, tok.pad_token_id, max_tokens=10_000):
        scores = method.score(batch, 0)
        out = method.loss(student_forward(student, batch, method.cfg.temperature), scores,
                          method.token_weights(batch, scores, 0), batch, 0)
        out.loss.backward()
        total += out.loss.item()
    grad = torch.cat([p.grad.flatten() for p in student.parameters() if p.grad is not None])
    return total, grad


@pytest.mark.parametrize("divergence", ["reverse_kl", "forward_kl", "jsd", "sampled_token"])
def test_identical_teacher_gives_zero_loss_and_gradient(tok, divergence: str) -> None:
    student = tiny(tok, 0)
    samples = make_samples(tok)
    if divergence == "sampled_token":  # the advantage uses the sampler's logprobs: make them the student's own
        batch = collate(samples, reduction_coefficients(samples, "token_mean"), tok.pad_token_id)
        with torch.no_grad():
            lp = student_forward(student, batch).token_logprobs
        for s, rows in zip(samples, batch.sample_rows()):
            cols = batch.cols[rows].tolist()
            for c, v in zip(cols, lp[rows].tolist()):
                s.sampler_logprobs[c] = v
    loss, grad = loss_and_grad(student, opd(copy.deepcopy(student), tok, divergence=divergence), samples, tok)
    assert abs(loss) < 1e-6
    assert grad.abs().max().item() < 1e-6


@pytest.mark.parametrize("divergence", ["reverse_kl", "forward_kl", "jsd", "sampled_token"])
def test_changing_the_teacher_changes_the_students_gradient(tok, divergence: str) -> None:
    student, samples = tiny(tok, 0), make_samples(tok)
    l1, g1 = loss_and_grad(student, opd(tiny(tok, 1), tok, divergence=divergence), samples, tok)
    l2, g2 = loss_and_grad(student, opd(tiny(tok, 2), tok, divergence=divergence), samples, tok)
    assert g1.abs().max() > 1e-6 and g2.abs().max() > 1e-6
    assert (g1 - g2).abs().max() > 1e-6 * g1.abs().max()
    if divergence != "sampled_token":
        assert l1 > 0 and l2 > 0


def test_topk_teacher_path_reaches_the_gradient(tok) -> None:
    student, samples = tiny(tok, 0), make_samples(tok)
    loss, grad = loss_and_grad(student, opd(tiny(tok, 1), tok, top_k=5), samples, tok)
    assert loss > 0 and grad.abs().max() > 1e-6
    loss_same, _ = loss_and_grad(student, opd(copy.deepcopy(student), tok, top_k=5), samples, tok)
    assert abs(loss_same) < 1e-6


def test_loss_covers_student_tokens_only(tok) -> None:
    """The loss equals a hand-computed mean over the masked positions of a full forward pass."""
    student, teacher, samples = tiny(tok, 0), tiny(tok, 1), make_samples(tok)
    method = opd(teacher, tok)
    loss, _ = loss_and_grad(student, method, samples, tok)
    terms = []
    with torch.no_grad():
        for s in samples:
            ids = torch.tensor([s.input_ids])
            ls = torch.log_softmax(student(ids).logits[0], -1)
            lt = torch.log_softmax(teacher(ids).logits[0], -1)
            for t, m in enumerate(s.loss_mask):
                if m:  # position t is predicted by the logits at t - 1
                    terms.append((ls[t - 1].exp() * (ls[t - 1] - lt[t - 1])).sum().item())
    assert loss == pytest.approx(sum(terms) / len(terms), rel=1e-4)
    # the rows are exactly the masked positions, nothing from prompt/env tokens
    batch = collate(samples, [1.0, 1.0], tok.pad_token_id)
    expect = [(b, t) for b, s in enumerate(samples) for t, m in enumerate(s.loss_mask) if m]
    assert list(zip(batch.rows.tolist(), batch.cols.tolist())) == expect


def test_reductions_are_exact_across_micro_batches(tok) -> None:
    student, teacher, samples = tiny(tok, 0), tiny(tok, 1), make_samples(tok) * 3
    for reduction in ("token_mean", "sample_mean", "sample_sum", "trajectory_mean"):
        method = opd(teacher, tok, reduction=reduction)
        whole = sum(method.loss(student_forward(student, b), method.score(b, 0), torch.ones(b.num_rows), b, 0).loss.item()
                    for b in micro_batches(samples, reduction, tok.pad_token_id, 10_000))
        split = sum(method.loss(student_forward(student, b), method.score(b, 0), torch.ones(b.num_rows), b, 0).loss.item()
                    for b in micro_batches(samples, reduction, tok.pad_token_id, 1))  # one sample each
        assert split == pytest.approx(whole, rel=1e-5), reduction


def test_privileged_teacher_context_scores_the_same_tokens(tok) -> None:
    """A teacher with extra context (MAD-OPD's debate) scores the student's tokens at shifted positions."""
    teacher = HFTeacher(tiny(tok, 1), tok)
    s = make_samples(tok)[0]
    extra = tok("Simon says, 'look around'.", add_special_tokens=False)["input_ids"]
    priv = Sample(s.input_ids, s.loss_mask, s.sampler_logprobs, teacher_input_ids=extra + s.input_ids,
                  teacher_loss_mask=[False] * len(extra) + s.loss_mask)
    batch = collate([priv], [1.0], tok.pad_token_id)
    req = batch.teacher_requests()[0]
    assert list(req.input_ids[len(extra):]) == s.input_ids
    direct = teacher.score([ScoreRequest(extra + s.input_ids, [p + len(extra) for p, m in enumerate(s.loss_mask) if m])])
    got = teacher.score(batch.teacher_requests())
    assert torch.allclose(got.token_logprobs, direct.token_logprobs)
    with pytest.raises(ValueError, match="trained tokens, in order"):
        Sample(s.input_ids, s.loss_mask, s.sampler_logprobs, teacher_input_ids=extra + s.input_ids,
               teacher_loss_mask=[True] * len(extra) + [False] * len(s.input_ids))


def test_teacher_with_another_tokenizer_fails_clearly(tok) -> None:
    from madopd_agents.zoo import build_tokenizer

    other = build_tokenizer(["completely different text for another vocabulary"] * 10, vocab_size=280)
    with pytest.raises(TokenizerMismatchError, match="does not share the student's tokenizer"):
        HFTeacher(tiny(tok, 1), other, student_tokenizer=tok)


def test_vllm_teacher_without_vllm_says_how_to_install() -> None:
    pytest.importorskip("torch")
    try:
        import vllm  # noqa: F401
        pytest.skip("vLLM is installed here")
    except ImportError:
        pass
    with pytest.raises(ImportError, match="pip install vllm"):
        VLLMTeacher("/nonexistent")


class _CompletionsServer(BaseHTTPRequestHandler):
    """A unit-test stand-in for vLLM's OpenAI server, answering from a local HF teacher."""

    teacher: HFTeacher
    tokenizer = None

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path == "/tokenize":
            out = {"tokens": self.tokenizer(body["prompt"], add_special_tokens=False)["input_ids"]}
        else:
            ids, k = body["prompt"], body["logprobs"]
            assert body["echo"] and body["return_tokens_as_token_ids"]
            sc = self.teacher.score([ScoreRequest(ids, list(range(1, len(ids))))], top_k=k)
            top = [None] + [{f"token_id:{i}": v for i, v in zip(r_i.tolist(), r_v.tolist())}
                            for r_i, r_v in zip(sc.topk_ids, sc.topk_logprobs)]
            out = {"choices": [{"logprobs": {"token_logprobs": [None] + sc.token_logprobs.tolist(),
                                             "top_logprobs": top}}]}
        data = json.dumps(out).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


def test_openai_teacher_parses_topk_and_checks_tokenizer(tok) -> None:
    local = HFTeacher(tiny(tok, 1), tok)
    handler = type("H", (_CompletionsServer,), {"teacher": local, "tokenizer": tok})
    server = HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/v1"
        remote = OpenAITeacher(url, "tiny", student_tokenizer=tok, top_k=4)
        s = make_samples(tok)[0]
        req = [ScoreRequest(s.input_ids, [t for t, m in enumerate(s.loss_mask) if m])]
        a, b = remote.score(req), local.score(req, top_k=4)
        assert torch.allclose(a.token_logprobs, b.token_logprobs, atol=1e-5)
        assert torch.equal(a.topk_ids, b.topk_ids) and torch.allclose(a.topk_logprobs, b.topk_logprobs, atol=1e-5)
        from madopd_agents.zoo import build_tokenizer

        other = build_tokenizer(["some other words entirely, not the same"] * 10, vocab_size=270)
        with pytest.raises(TokenizerMismatchError):
            OpenAITeacher(url, "tiny", student_tokenizer=other)
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(ConnectionError, match="cannot reach"):
        OpenAITeacher(url, "tiny", tokenizer_check=False, timeout=2).score(req)
