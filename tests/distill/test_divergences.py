"""Divergences against float64 references written out term by term (no shared code with the module).

Pins the direction convention (forward KL = KL(T||S), reverse KL = KL(S||T), generalized JSD beta=0 ->
forward, beta=1 -> reverse: TRL's and MAD-OPD's), the beta limits, zero on identical inputs, masking,
the top-k variants, the sampled-token advantage, and the chunked function's value and analytic gradient.
"""

from __future__ import annotations

import math

import pytest
import torch

from madopd_distill import divergences as D

def ref_kl(p: list[float], q: list[float]) -> float:
    """KL(P||Q) for probability lists, the textbook sum."""
    return sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q) if pi > 0)


def ref_jsd(ps: list[float], pt: list[float], beta: float) -> float:
    m = [(1 - beta) * a + beta * b for a, b in zip(ps, pt)]
    return beta * ref_kl(pt, m) + (1 - beta) * ref_kl(ps, m)


def rand_logits(n: int = 6, v: int = 11, scale: float = 2.0, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)  # each test draws the same inputs whatever ran before
    return (torch.randn(n, v, dtype=torch.float64, generator=g) * scale,
            torch.randn(n, v, dtype=torch.float64, generator=g) * scale)


def probs(z: torch.Tensor) -> list[list[float]]:
    return torch.softmax(z, -1).tolist()


def test_direction_names_match_textbook_kl() -> None:
    s, t = rand_logits()
    ls, lt = torch.log_softmax(s, -1), torch.log_softmax(t, -1)
    fwd, rev = D.forward_kl(ls, lt), D.reverse_kl(ls, lt)
    for i, (ps, pt) in enumerate(zip(probs(s), probs(t))):
        assert fwd[i].item() == pytest.approx(ref_kl(pt, ps), rel=1e-12)  # KL(T||S)
        assert rev[i].item() == pytest.approx(ref_kl(ps, pt), rel=1e-12)  # KL(S||T)
    assert not torch.allclose(fwd, rev)  # the test would be vacuous on symmetric inputs


@pytest.mark.parametrize("beta", [0.1, 0.25, 0.5, 0.9])
def test_generalized_jsd_matches_reference(beta: float) -> None:
    s, t = rand_logits()
    got = D.generalized_jsd(torch.log_softmax(s, -1), torch.log_softmax(t, -1), beta)
    for i, (ps, pt) in enumerate(zip(probs(s), probs(t))):
        assert got[i].item() == pytest.approx(ref_jsd(ps, pt, beta), rel=1e-10)


def test_beta_endpoints_are_the_kls_and_the_limits_agree() -> None:
    s, t = rand_logits()
    ls, lt = torch.log_softmax(s, -1), torch.log_softmax(t, -1)
    assert torch.equal(D.generalized_jsd(ls, lt, 0.0), D.forward_kl(ls, lt))
    assert torch.equal(D.generalized_jsd(ls, lt, 1.0), D.reverse_kl(ls, lt))
    # The bare formula vanishes at the ends; scaled, it tends to the KL the endpoint names, with an
    # error linear in the distance to the endpoint.
    fwd, rev = D.forward_kl(ls, lt), D.reverse_kl(ls, lt)
    err = {}
    for eps in (1e-4, 1e-6):
        err[eps] = ((D.generalized_jsd(ls, lt, eps) / eps - fwd).abs().max().item(),
                    (D.generalized_jsd(ls, lt, 1 - eps) / eps - rev).abs().max().item())
    for side in (0, 1):
        assert err[1e-6][side] < err[1e-4][side] / 50
        assert err[1e-6][side] < 1e-3 * min(fwd.min(), rev.min()).item()


@pytest.mark.parametrize("kind,beta", [("forward_kl", 0.5), ("reverse_kl", 0.5), ("jsd", 0.5), ("jsd", 0.1)])
def test_zero_on_identical_inputs(kind: str, beta: float) -> None:
    s, _ = rand_logits()
    ls = torch.log_softmax(s, -1)
    assert D.divergence(ls, ls, kind, beta).abs().max().item() < 1e-12
    assert D.chunked_divergence(s, s.clone(), kind, beta).abs().max().item() < 1e-12


def test_bad_inputs_fail_clearly() -> None:
    s, t = rand_logits()
    with pytest.raises(ValueError, match="beta"):
        D.generalized_jsd(s, t, 1.5)
    with pytest.raises(ValueError, match="unknown divergence"):
        D.divergence(s, t, "kl")
    with pytest.raises(ValueError, match="vocabularies"):
        D.chunked_divergence(s, t[:, :5])


@pytest.mark.parametrize("kind,beta", [("forward_kl", 0.0), ("reverse_kl", 1.0), ("jsd", 0.1), ("jsd", 0.5),
                                       ("jsd", 0.9)])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_chunked_value_and_analytic_gradient_match_autograd(kind: str, beta: float, temperature: float) -> None:
    s, t = rand_logits(n=23, v=37)
    s.requires_grad_(True)
    w = torch.randn(23, dtype=torch.float64, generator=torch.Generator().manual_seed(1))  # arbitrary upstream gradient, incl. negative weights
    got = D.chunked_divergence(s, t, kind, beta, temperature, chunk_size=5)
    (g_got,) = torch.autograd.grad((got * w).sum(), s)
    ref = D.logits_divergence(s, t, kind, beta, temperature)
    (g_ref,) = torch.autograd.grad((ref * w).sum(), s)
    assert torch.allclose(got, ref, atol=1e-12)
    assert torch.allclose(g_got, g_ref, atol=1e-12)
    # and against finite differences on one coordinate (independent of autograd)
    i, j, h = 3, 7, 1e-6
    sp, sm = s.detach().clone(), s.detach().clone()
    sp[i, j] += h
    sm[i, j] -= h
    fd = ((D.logits_divergence(sp, t, kind, beta, temperature) * w).sum()
          - (D.logits_divergence(sm, t, kind, beta, temperature) * w).sum()) / (2 * h)
    assert g_got[i, j].item() == pytest.approx(fd.item(), abs=1e-7)


def test_chunked_float32_and_leading_dims() -> None:
    g = torch.Generator().manual_seed(2)
    s, t = torch.randn(2, 5, 50, generator=g), torch.randn(2, 5, 50, generator=g)
    got = D.chunked_divergence(s, t, "jsd", 0.5, chunk_size=3)
    assert got.shape == (2, 5)
    ref = D.logits_divergence(s.double(), t.double(), "jsd", 0.5).float()
    assert torch.allclose(got, ref, atol=1e-6)


def test_masking_rows_drop_out_of_loss_and_gradient() -> None:
    s, t = rand_logits(n=8)
    s.requires_grad_(True)
    mask = torch.tensor([1, 0, 1, 1, 0, 0, 1, 1], dtype=torch.float64)
    loss = (D.chunked_divergence(s, t, "reverse_kl") * mask).sum() / mask.sum()
    (g,) = torch.autograd.grad(loss, s)
    assert torch.all(g[mask == 0] == 0) and torch.all(g[mask == 1].abs().sum(-1) > 0)
    t2 = t.clone()
    t2[mask == 0] += 5.0 * torch.arange(t2[mask == 0].numel(), dtype=torch.float64).reshape(-1, t2.shape[1]).cos()  # masked rows' teacher cannot matter
    loss2 = (D.chunked_divergence(s, t2, "reverse_kl") * mask).sum() / mask.sum()
    assert loss2.item() == pytest.approx(loss.item(), rel=1e-14)


def test_topk_remainder_is_exact_with_full_topk_and_a_lower_bound_otherwise() -> None:
    s, t = rand_logits(v=9)
    lt = torch.log_softmax(t, -1)
    full = D.reverse_kl(torch.log_softmax(s, -1), lt)
    v, i = lt.topk(9, -1)
    s_lp, t_lp = D.topk_logprobs(s, i, v, "remainder")
    assert torch.allclose(D.reverse_kl(s_lp, t_lp), full, atol=1e-6)  # remainder bucket ~0 mass
    for k in (1, 3, 5):
        v, i = lt.topk(k, -1)
        for kind in ("forward_kl", "reverse_kl", "jsd"):
            s_lp, t_lp = D.topk_logprobs(s, i, v, "remainder")
            approx = D.divergence(s_lp, t_lp, kind)
            exact = D.divergence(torch.log_softmax(s, -1), lt, kind)
            assert torch.all(approx <= exact + 1e-9), (k, kind)  # data-processing inequality
            assert torch.allclose(s_lp.exp().sum(-1), torch.ones(6, dtype=torch.float64))


def test_topk_renorm_and_padding() -> None:
    s, t = rand_logits(v=9)
    lt = torch.log_softmax(t, -1)
    v, i = lt.topk(4, -1)
    s_lp, t_lp = D.topk_logprobs(s, i, v, "renorm")
    ref_s = torch.log_softmax(s.gather(-1, i), -1)
    ref_t = torch.log_softmax(v, -1)
    assert torch.allclose(s_lp, ref_s) and torch.allclose(t_lp, ref_t)
    # a server that returned only 2 of 4 entries pads with -inf: same as asking for top-2
    v2 = v.clone()
    v2[:, 2:] = -math.inf
    a = D.reverse_kl(*D.topk_logprobs(s, i, v2, "remainder"))
    b = D.reverse_kl(*D.topk_logprobs(s, i[:, :2], v[:, :2], "remainder"))
    assert torch.allclose(a, b, atol=1e-9)


def test_sampled_token_advantage_sign_and_scale() -> None:
    lt, ls = torch.tensor([-1.0, -3.0]), torch.tensor([-2.0, -1.0])
    assert torch.equal(D.sampled_token_advantage(lt, ls, 0.5), torch.tensor([0.5, -1.0]))
    # its expectation under the student is -KL(S||T)
    s, t = rand_logits(n=1, v=5)
    ls, lt = torch.log_softmax(s, -1)[0], torch.log_softmax(t, -1)[0]
    expect = (ls.exp() * D.sampled_token_advantage(lt, ls)).sum()
    assert expect.item() == pytest.approx(-D.reverse_kl(ls, lt).item(), rel=1e-12)


# -- -inf entries: no NaN gradients ---------------------------------------------------------------
@pytest.mark.parametrize("kind", ["reverse_kl", "jsd", "forward_kl"])
def test_padded_topk_rows_in_renorm_mode_give_finite_gradients(kind: str) -> None:
    s, t = rand_logits(v=9)
    s.requires_grad_(True)
    v, i = torch.log_softmax(t, -1).topk(4, -1)
    v[:, 2:] = -math.inf  # a server that returned 2 of 4 entries pads with -inf (and id 0)
    i[:, 2:] = 0
    loss = D.divergence(*D.topk_logprobs(s, i, v, "renorm"), kind).sum()
    (g,) = torch.autograd.grad(loss, s)
    assert torch.isfinite(loss) and torch.isfinite(g).all()
    ref = D.divergence(*D.topk_logprobs(s, i[:, :2], v[:, :2], "renorm"), kind).sum()  # the same as top-2
    assert loss.item() == pytest.approx(ref.item(), rel=1e-12)


@pytest.mark.parametrize("kind", ["reverse_kl", "jsd", "forward_kl"])
@pytest.mark.parametrize("path", ["plain", "chunked"])
def test_a_token_both_models_rule_out_gives_finite_gradients(kind: str, path: str) -> None:
    s, t = rand_logits(v=9)
    s[:, 3] = t[:, 3] = -math.inf  # e.g. a vocabulary slot masked in both models
    s.requires_grad_(True)
    fn = D.logits_divergence if path == "plain" else D.chunked_divergence
    loss = fn(s, t, kind).sum()
    (g,) = torch.autograd.grad(loss, s)
    assert torch.isfinite(loss) and torch.isfinite(g).all()
    keep = [j for j in range(9) if j != 3]  # the divergence over the other 8 tokens
    ref = D.logits_divergence(s.detach()[:, keep], t[:, keep], kind).sum()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-10)


# -- temperature: both models at the loss temperature; rollouts tied to it ---------------------------
class TinyLM(torch.nn.Module):
    """A causal LM small enough for a unit test (next-token logits from the current token), with the
    call signature ``causal_lm_logits`` uses; an exact copy of it is the teacher."""

    def __init__(self, vocab: int = 13, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.emb, self.head = torch.nn.Embedding(vocab, 8), torch.nn.Linear(8, vocab)

    def forward(self, input_ids, attention_mask=None, logits_to_keep=None, use_cache=False):
        from types import SimpleNamespace

        logits = 3.0 * self.head(self.emb(input_ids))
        return SimpleNamespace(logits=logits if logits_to_keep is None else logits[:, logits_to_keep])


def nucleus_rollouts(model: TinyLM, temperature: float, top_p: float, n: int = 3, length: int = 6):
    """Samples written by ``model`` at ``temperature`` with top-p truncation; each token's log-prob is the
    truncated sampler's, as a vLLM/HF sampler reports it."""
    from madopd_distill.trajectory import Sample

    g = torch.Generator().manual_seed(5)
    samples = []
    for b in range(n):
        ids, lps = [1 + b], [0.0]
        with torch.no_grad():
            for _ in range(length):
                p = torch.softmax(model(torch.tensor([ids])).logits[0, -1] / temperature, -1)
                order = p.argsort(descending=True)
                keep = order[: int((p[order].cumsum(0) < top_p).sum()) + 1]
                q = torch.zeros_like(p)
                q[keep] = p[keep] / p[keep].sum()
                tok = int(torch.multinomial(q, 1, generator=g))
                ids.append(tok)
                lps.append(float(q[tok].log()))
        samples.append(Sample(ids, [False] + [True] * length, lps, traj_index=b))
    return samples


def copy_teacher_setup(temperature: float, top_p: float, device: str = "cpu"):
    import copy
    from types import SimpleNamespace

    from madopd_distill.batch import collate, reduction_coefficients
    from madopd_distill.teachers import HFTeacher

    model = TinyLM()
    samples = nucleus_rollouts(model, temperature, top_p)
    batch = collate(samples, reduction_coefficients(samples, "token_mean"), pad_id=0)
    teacher = HFTeacher(copy.deepcopy(model), SimpleNamespace(pad_token_id=0), name="copy")
    return model.to(device), batch, teacher


COPY_CASES = [("reverse_kl", None, "remainder"), ("forward_kl", None, "remainder"), ("jsd", None, "remainder"),
              ("reverse_kl", 5, "renorm"), ("jsd", 5, "renorm"), ("sampled_token", None, "remainder")]


@pytest.mark.parametrize("temperature,top_p", [(2.0, 1.0), (1.0, 0.9), (2.0, 0.9)])
@pytest.mark.parametrize("divergence,top_k,mode", COPY_CASES)
def test_an_exact_copy_of_the_student_as_teacher_gives_zero_loss_and_gradient(divergence, top_k, mode,
                                                                             temperature, top_p) -> None:
    from madopd_distill.methods.base import MethodConfig, reduce_rows, row_divergence, sampled_kl
    from madopd_distill.trainer import student_forward

    torch.set_num_threads(1)
    model, batch, teacher = copy_teacher_setup(temperature, top_p)
    cfg = MethodConfig(divergence=divergence, temperature=temperature, top_k=top_k, topk_mode=mode)
    scores = teacher.score(batch.teacher_requests(), top_k=top_k)
    student = student_forward(model, batch, cfg.temperature)
    if top_p < 1:  # the sampler's log-probs are the truncated distribution's, not the student's
        assert (batch.sampler_logprobs - student.token_logprobs.detach()).max() > 0.01
    loss = reduce_rows(row_divergence(student, scores, batch, cfg), torch.ones(batch.num_rows), batch)
    loss.backward()
    assert abs(loss.item()) < 1e-6, loss.item()
    assert max(p.grad.abs().max().item() for p in model.parameters()) < 1e-6
    assert sampled_kl(student, scores).abs().max().item() < 1e-5  # the logged KL compares at one temperature too


def test_a_temperature_the_teachers_topk_cannot_give_is_refused() -> None:
    from madopd_distill.methods.base import MethodConfig, row_divergence
    from madopd_distill.trainer import student_forward

    model, batch, teacher = copy_teacher_setup(2.0, 1.0)
    student = student_forward(model, batch, 2.0)
    scores = teacher.score(batch.teacher_requests(), top_k=5)
    with pytest.raises(ValueError, match="topk_mode='renorm' or temperature=1"):
        row_divergence(student, scores, batch, MethodConfig(temperature=2.0, top_k=5, topk_mode="remainder"))
    sparse = type(scores)(scores.token_logprobs, topk_ids=scores.topk_ids, topk_logprobs=scores.topk_logprobs)
    with pytest.raises(ValueError, match="temperature to 1 or use a full-distribution teacher"):
        row_divergence(student, sparse, batch, MethodConfig(divergence="sampled_token", temperature=2.0))


def test_rollouts_at_another_temperature_than_the_loss_are_refused() -> None:
    from madopd_distill.trainer import RolloutConfig, check_rollout_temperature

    check_rollout_temperature(RolloutConfig(temperature=2.0, top_p=0.9), 2.0)  # tied (top-p: see above)
    with pytest.raises(ValueError, match=r"rollout.temperature=0.7 differs from the method's loss temperature 1.0"):
        check_rollout_temperature(RolloutConfig(temperature=0.7), 1.0)


# -- device: everything meets on the student's device ----------------------------------------------
@pytest.mark.parametrize("divergence,top_k,mode", COPY_CASES)
def test_the_loss_runs_on_the_students_device_with_cpu_batch_and_teacher(divergence, top_k, mode) -> None:
    """The student on the ``meta`` device (no data; any op that mixes it with a CPU tensor raises, as
    CUDA would), batch and teacher scores on the CPU as collate and the teachers make them."""
    from madopd_distill.methods.base import MethodConfig, reduce_rows, row_divergence, sampled_kl
    from madopd_distill.trainer import student_forward

    model, batch, teacher = copy_teacher_setup(1.0, 1.0, device="meta")
    scores = teacher.score(batch.teacher_requests(), top_k=top_k)
    assert scores.token_logprobs.device.type == "cpu" and batch.reduce_weight.device.type == "cpu"
    cfg = MethodConfig(divergence=divergence, top_k=top_k, topk_mode=mode)
    student = student_forward(model, batch, cfg.temperature)
    assert student.logits.device.type == "meta"
    per_row = row_divergence(student, scores, batch, cfg)
    loss = reduce_rows(per_row, torch.ones(batch.num_rows), batch)
    assert per_row.device.type == loss.device.type == sampled_kl(student, scores).device.type == "meta"
    loss.backward()
    # what the training loop does before the loss: batch and scores moved to the student's device
    moved, moved_scores = batch.to("meta"), scores.to("meta")
    assert all(getattr(moved, f).device.type == "meta" for f in ("input_ids", "rows", "targets", "sampler_logprobs",
                                                                  "row_traj", "reduce_weight"))
    assert all(x is None or x.device.type == "meta" for x in (moved_scores.token_logprobs, moved_scores.logits,
                                                              moved_scores.topk_ids, moved_scores.topk_logprobs))
