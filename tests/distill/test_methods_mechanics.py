"""Method-level mechanics on real rollouts: which tokens each method trains on, and what it plans.

A real TextWorldExpress env (Coin) in a worker process, played by a fake agent that returns fixed
token ids (a test helper: no model is needed to pin plans, masks and sample grouping).
"""

from __future__ import annotations

import pytest
import torch

from madopd_agents.base import ActionOutput
from madopd_distill.batch import collate, reduction_coefficients
from madopd_distill.methods import build_method
from madopd_distill.methods.base import MethodContext, StudentOutput, reduce_rows, row_divergence
from madopd_distill.methods.guided import teacher_writes
from madopd_distill.methods.opad import grouped_batches
from madopd_distill.rollout import Episode, RolloutCollector, RolloutPrompt, Sample, Trajectory, Turn, to_samples
from madopd_distill.teachers import TokenScores

ENV = "madopd/TWX-Coin-v0"


def encode(conversation) -> list[int]:
    """A toy chat encoding with the prefix property of real templates: the prompt of turn t + 1
    starts with the prompt of turn t + its completion (so trajectories are contiguous)."""
    ids: list[int] = []
    for msg in conversation:
        if msg["role"] == "assistant":
            c = msg["content"]
            ids += [5] + ([7] * 3 if c.endswith("#student") else [9] * 3 if c.endswith("#teacher")
                          else [20 + ord(x) % 50 for x in c[:4]])
        else:
            ids += [4] + [20 + ord(x) % 50 for x in msg["content"][:4]]
    return ids


class TokenAgent:
    """Replies ``<action>look around</action>#<name>`` as 3 fixed tokens (7: student, 9: teacher)."""

    def __init__(self, name: str, token: int):
        self.name, self.token, self.calls = name, token, 0

    def act(self, conversations, sampling, infos=None):
        self.calls += len(conversations)
        tag = "student" if self.token == 7 else "teacher"
        return [ActionOutput(text=f"<action>look around</action>#{tag}", token_ids=[self.token] * 3,
                             logprobs=[-1.0] * 3, prompt_token_ids=encode(c) + [5])
                for c in conversations for _ in range(sampling.n)]

    def close(self):
        pass


class NullTeacher:
    name = "t"

    def score(self, requests, *, top_k=None):
        raise AssertionError("not scored in these tests")


@pytest.fixture(scope="module")
def collector():
    from madopd_agents.base import SamplingParams

    col = RolloutCollector(ENV, 1, TokenAgent("student", 7), SamplingParams(max_new_tokens=4),
                           teacher_agent=TokenAgent("teacher", 9), expert=True, max_env_steps=40)
    yield col
    col.close()


def ctx(**kw) -> MethodContext:
    return MethodContext(teachers={"a": NullTeacher(), "b": NullTeacher()}, prompt=RolloutPrompt.for_env(ENV),
                         total_steps=10, **kw)


def test_guided_teacher_turns_are_masked(collector):
    m = build_method("guided", {"p_start": 1.0, "schedule": "constant", "max_env_steps": 3},
                     ctx(teacher_agents={"a": TokenAgent("a", 9)}))
    trajs = m.collect(collector, [Episode("train-5", 0)], step=0)
    assert all(t.role != "student" for t in trajs[0].turns)  # p = 1: every turn is the teacher's
    assert to_samples(trajs, "trajectory") == []  # ... so nothing is trained on
    # p = 0.5: mixed turns; teacher tokens (id 9) never carry the loss mask, student tokens (7) do
    m = build_method("guided", {"p_start": 0.5, "schedule": "constant", "max_env_steps": 8},
                     ctx(teacher_agents={"a": TokenAgent("a", 9)}, seed=3))
    trajs = m.collect(collector, [Episode("train-0", 0), Episode("train-0", 1)], step=0)
    roles = [t.role for tr in trajs for t in tr.turns if t.role in ("student", "teacher")]
    assert "student" in roles and "teacher" in roles
    for s in to_samples(trajs, "trajectory"):
        assert {x for x, keep in zip(s.input_ids, s.loss_mask) if keep} == {7}
        assert 9 in s.input_ids  # teacher turns stay in the context
    assert m.log_metrics(trajs, 0)["guided/teacher_turn_frac"] == pytest.approx(roles.count("teacher") / len(roles))


def test_guided_schedule_and_coins():
    m = build_method("guided", {"p_start": 0.8, "schedule": "linear", "decay_steps": 4}, ctx(
        teacher_agents={"a": TokenAgent("a", 9)}))
    assert [m.p(s) for s in (0, 2, 4, 9)] == pytest.approx([0.8, 0.4, 0.0, 0.0])
    assert not any(teacher_writes(0.0, "s", t) for t in range(100))
    assert all(teacher_writes(1.0, "s", t) for t in range(100))
    frac = sum(teacher_writes(0.3, "seed", t) for t in range(2000)) / 2000
    assert 0.25 < frac < 0.35
    assert teacher_writes(0.5, "x", 3) == teacher_writes(0.5, "x", 3)  # reproducible


def test_tcod_f2b_caps_student_steps_and_b2f_replays_a_masked_prefix(collector):
    f2b = build_method("tcod", {"variant": "f2b", "eta": 2}, ctx())
    assert [f2b.plan(s).max_env_steps for s in (0, 1, 2, 5)] == [1, 1, 2, 3]
    trajs = f2b.collect(collector, [Episode("train-0", 0)], step=4)
    assert trajs[0].num_steps <= 3 and len(trajs[0].student_turns) <= 3
    b2f = build_method("tcod", {"variant": "b2f", "eta": 1, "student_max_turns": 2}, ctx())
    assert b2f.needs_expert and not f2b.needs_expert
    trajs = b2f.collect(collector, [Episode("train-3", 0)], step=1)  # W = 2: replay L - 2 expert actions
    t = trajs[0]
    c = t.meta["tcod_replay"]
    assert c == max(0, t.meta["tcod_expert_length"] - 2)
    actors = [x for x in t.turns if x.role in ("student", "teacher")]
    assert all(x.provenance == "expert" for x in actors[:c])
    if not t.won or len(actors) > c:  # the student took over after the prefix, for at most 2 turns
        assert [x.role for x in actors[c:]] in (["student"], ["student", "student"])
    for s in to_samples(trajs, "trajectory"):
        assert {x for x, keep in zip(s.input_ids, s.loss_mask) if keep} <= {7}
    assert all(not any(x.loss_mask) for x in actors[:c])


def test_opad_expert_forced_history_and_grouping(collector):
    m = build_method("opad", {"max_turns": 3}, ctx())  # teacher-forced step-level sampling is the default
    assert m.cfg.history == "expert" and m.needs_expert
    assert not build_method("opad", {"history": "student"}, ctx()).needs_expert
    trajs = m.collect(collector, [Episode("train-0", 0), Episode("train-3", 1)], step=0)
    assert len(trajs) == 6 and [t.meta["opad_turn"] for t in trajs] == [0, 1, 2] * 2
    with_student = 0
    for t in trajs:
        j = t.meta["opad_turn"]
        actors = [x for x in t.turns if x.role in ("student", "teacher")]
        assert all(x.provenance == "expert" for x in actors[:j]) and len(actors) <= j + 1
        if len(actors) == j + 1:  # the expert had not finished: the student wrote turn j
            assert actors[j].role == "student"
            with_student += 1
        else:
            assert t.won  # no student turn only when the expert's replay already won
    samples = m.make_samples(trajs, 0)
    assert len(samples) == with_student >= 2
    groups = [s.meta["opad_group"] for s in samples]
    assert groups == sorted(groups)  # a trajectory's turns are contiguous
    capped = build_method("opad", {"history": "expert", "max_turns": 3, "max_samples": 2}, ctx())
    kept = capped.make_samples(trajs, 0)
    first = [s for s in samples if s.meta["opad_group"] == samples[0].meta["opad_group"]]
    assert len(kept) <= max(2, len(first)) and {s.meta["opad_group"] for s in kept} == {first[0].meta["opad_group"]}


def test_grouped_batches_never_split_a_group():
    assert grouped_batches([0, 0, 1, 1, 1, 2], 4) == [[0, 1], [2, 3, 4, 5]]
    assert grouped_batches([0, 0, 0, 0, 0, 1], 3) == [[0, 1, 2, 3, 4], [5]]  # too big: alone, whole
    assert grouped_batches([], 2) == []
    with pytest.raises(ValueError):
        grouped_batches([0], 0)


def _traj_with_turns() -> Trajectory:
    conv = [{"role": "user", "content": "You are in a room."}]
    return Trajectory("train-0", turns=[
        Turn("prompt", text="You are in a room."),
        Turn("student", text="<action>go</action>", token_ids=[7, 7], logprobs=[-1.0, -2.0], context_ids=[1, 2],
             context=conv, action="go"),
        Turn("env", text="You go."),
        Turn("student", text="<action>take</action>", token_ids=[8, 8, 8], logprobs=[-1.0] * 3,
             context_ids=[1, 2, 7, 7, 3], context=conv, action="take"),
        Turn("env", text="You win."),
    ], rewards=[0.0, 1.0], won=True)


class ScriptedJudge:
    name = "judge"

    def __init__(self, replies):
        self.replies, self.prompts = replies, []

    def act(self, conversations, sampling, infos=None):
        self.prompts += conversations
        return [ActionOutput(text=self.replies[i]) for i in range(len(conversations))]


@pytest.mark.parametrize("mode", ["trajectory", "turn"])
def test_sage_row_levels_follow_each_turns_judgement(mode):
    judge = ScriptedJudge(["fine <<JUDGE=skip>>", "bad <<JUDGE=intervene>>"])
    m = build_method("sage", {"sample_mode": mode}, ctx(teacher_agents={"a": judge}))
    samples = m.make_samples([_traj_with_turns()], 0)
    levels = [w for s in samples for w in s.meta["row_levels"]]
    assert levels == [0.0, 0.0, 1.0, 1.0, 1.0]  # turn 1 skipped (2 tokens), turn 2 intervened (3 tokens)
    assert "You go." in judge.prompts[0][-1]["content"] and "You win." in judge.prompts[1][-1]["content"]
    log = m.log_metrics([], 0)
    assert log["sage/unparsed_frac"] == 0.0 and log["sage/skip_frac"] == log["sage/intervene_frac"] == 0.5


@pytest.mark.parametrize("fallback", [1.0, 0.0])
def test_sage_unparsed_judgement_is_a_parse_failure_with_the_configured_fallback(fallback):
    # "weak" names no level of the default two-level scheme: a parse failure, like a reply without a tag.
    judge = ScriptedJudge(["no tag at all", "<<JUDGE=weak>>"])
    m = build_method("sage", {"sample_mode": "turn", "unparsed_weight": fallback}, ctx(teacher_agents={"a": judge}))
    samples = m.make_samples([_traj_with_turns()], 0)
    assert [w for s in samples for w in s.meta["row_levels"]] == [fallback] * 5
    log = m.log_metrics([], 0)
    assert log["sage/unparsed"] == 2.0 and log["sage/unparsed_frac"] == 1.0
    assert log["sage/skip_frac"] == log["sage/intervene_frac"] == 0.0  # never counted as a level
    three = build_method("sage", {"levels": "three"}, ctx(teacher_agents={"a": ScriptedJudge(["<<JUDGE=weak>>", "?"])}))
    assert [w for s in three.make_samples([_traj_with_turns()], 0) for w in s.meta["row_levels"]] == [0.5, 0.5, 1, 1, 1]
    assert three.log_metrics([], 0)["sage/weak_frac"] == 0.5 and three.log_metrics([], 0)["sage/unparsed_frac"] == 0.5


def _batch(n_samples=2, length=6, vocab=11, seed=0):
    g = torch.Generator().manual_seed(seed)
    samples = []
    for i in range(n_samples):
        ids = torch.randint(0, vocab, (length,), generator=g).tolist()
        samples.append(Sample(ids, [False, False] + [True] * (length - 2), [0.0] * length, traj_index=i))
    batch = collate(samples, reduction_coefficients(samples, "token_mean"), pad_id=0)
    logits = torch.randn(batch.num_rows, vocab, generator=g, requires_grad=True)
    lp = torch.log_softmax(logits, -1).gather(-1, batch.targets[:, None]).squeeze(-1)
    scores = []
    for k in range(2):
        t = torch.randn(batch.num_rows, vocab, generator=g) * 2
        scores.append(TokenScores(torch.log_softmax(t, -1).gather(-1, batch.targets[:, None]).squeeze(-1), logits=t))
    return batch, logits, StudentOutput(logits, lp), scores


def test_multi_teacher_losses_reach_the_gradient():
    batch, logits, student, scores = _batch()
    opd = build_method("opd", {}, ctx())
    single = reduce_rows(row_divergence(student, scores[0], batch, opd.cfg), torch.ones(batch.num_rows), batch)
    mt = build_method("mt_opd", {"teacher_weights": [1.0, 0.0]}, ctx())
    out = mt.loss(student, scores, torch.ones(batch.num_rows), batch, 0)
    assert float(out.loss.detach()) == pytest.approx(float(single.detach()), rel=1e-5)  # weight 1 on teacher a = OPD with a
    (g_a,) = torch.autograd.grad(out.loss, logits)
    mt_b = build_method("mt_opd", {"teacher_weights": [0.0, 1.0]}, ctx())
    (g_b,) = torch.autograd.grad(mt_b.loss(student, scores, torch.ones(batch.num_rows), batch, 0).loss, logits)
    assert not torch.allclose(g_a, g_b)  # the teachers' signal reaches the gradient
    # MAD-OPD: per-sample debate weights; a teacher dropped for a sample gives the other all its weight
    for s, (w, valid) in zip(batch.samples, [([0.9, 0.1], [True, True]), ([0.5, 0.5], [False, True])]):
        s.meta.update(teacher_weights=w, teacher_valid=valid)
    mad = build_method("mad_opd", {"divergence": "reverse_kl"}, ctx(teacher_agents={"a": TokenAgent("a", 1),
                                                                                 "b": TokenAgent("b", 2)}))
    d = [row_divergence(student, s, batch, opd.cfg) for s in scores]
    rows0, rows1 = batch.rows == 0, batch.rows == 1
    expected = (0.9 * d[0][rows0].mean() + 0.1 * d[1][rows0].mean() + d[1][rows1].mean()) / 2
    got = mad.loss(student, scores, torch.ones(batch.num_rows), batch, 0).loss
    assert float(got.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)


def test_sage_weights_keep_opd_scale_in_a_batch():
    batch, logits, student, scores = _batch()
    judge = ScriptedJudge([])
    m = build_method("sage", {"confidence": "max_prob"}, ctx(teacher_agents={"a": judge}))
    for s, lvl in zip(batch.samples, [0.0, 1.0]):
        s.meta["row_levels"] = [lvl] * s.num_tokens
    w = m.token_weights(batch, scores, 0)
    assert float((batch.reduce_weight * w).sum()) == pytest.approx(float(batch.reduce_weight.sum()))
    assert float(w[batch.rows == 0].abs().sum()) == 0.0


def test_mad_opd_student_sequence_never_holds_the_transcript():
    from madopd_agents.zoo import build_tokenizer

    tok = build_tokenizer(["You are in a room. Expert A B debate round go take coin SECRET plan"], vocab_size=300)

    class Debater:
        def __init__(self, name):
            self.name = name

        def act(self, conversations, sampling, infos=None):
            return [ActionOutput(text=f"SECRET plan of {self.name} <<CONFIDENCE=80>>") for _ in conversations]

    conv = [{"role": "user", "content": "You are in a room."}]
    ctx_ids = tok.apply_chat_template(conv, add_generation_prompt=True, tokenize=True, return_dict=False)
    reply = tok("go", add_special_tokens=False)["input_ids"]
    traj = Trajectory("train-0", turns=[Turn("prompt", text="You are in a room."),
                                        Turn("student", text="go", token_ids=reply, logprobs=[-1.0] * len(reply),
                                             context_ids=list(ctx_ids), context=conv, action="go"),
                                        Turn("env", text="ok")])
    m = build_method("mad_opd", {"rounds": 2}, ctx(teacher_agents={"a": Debater("a"), "b": Debater("b")},
                                                   tokenizer=tok))
    (s,) = m.make_samples([traj], 0)
    secret = tok("SECRET", add_special_tokens=False)["input_ids"]
    assert s.input_ids == list(ctx_ids) + reply  # the student's own context, untouched
    assert "SECRET" not in tok.decode(s.input_ids)
    for ids, mask in s.meta["teacher_inputs"]:
        text = tok.decode(ids)
        assert "SECRET plan of a" in text and "SECRET plan of b" in text and "[Debate Start]" in text
        assert [x for x, keep in zip(ids, mask) if keep] == reply  # teachers score exactly the student's tokens
    assert secret and s.meta["teacher_weights"] == pytest.approx([0.5, 0.5]) and s.meta["confidences"] == [80, 80]
    assert m.kind == "jsd" and m.beta == 0.5  # TWX is agentic: JSD beta = 0.5


def test_routing_confidence_router_and_learned_router_in_the_loss():
    batch, logits, student, scores = _batch()
    m = build_method("routing", {"complementary": False}, ctx())  # selection alone (the head: test_methods_routing)
    out = m.loss(student, scores, torch.ones(batch.num_rows), batch, 0)
    conf = torch.stack([torch.log_softmax(s.logits, -1).max(-1).values for s in scores])
    expected_share_a = float((conf[0] >= conf[1]).float().mean())
    assert out.metrics["route/share/a"] == pytest.approx(expected_share_a)
    d = torch.stack([row_divergence(student, s, batch, m.cfg) for s in scores])
    routed = torch.where(conf[0] >= conf[1], d[0], d[1])
    assert float(out.loss.detach()) == pytest.approx(float((batch.reduce_weight * routed).sum().detach()), rel=1e-5)
    learned = build_method("routing", {"router": "learned", "complementary": False}, ctx())
    for s, won in zip(batch.samples, [True, False]):
        s.meta["won"] = won
    out = learned.loss(student, scores, torch.ones(batch.num_rows), batch, 0)
    assert out.metrics["route/router_rows"] == float((batch.rows == 0).sum()) and learned.router_trained
    out = learned.loss(student, scores, torch.ones(batch.num_rows), batch, 1)  # now routed by the trained router
    assert sum(v for k, v in out.metrics.items() if k.startswith("route/share/")) == pytest.approx(1.0)


def test_routing_is_sharper_than_mad_opd_weights():
    """The contrast the two combiners make: MAD-OPD's softmax(c/100/tau) weighs whole teachers and at
    tau=1 gives at most ~0.73 to the most confident one; routing hands each token to one teacher."""
    from madopd_distill.methods.debate import confidence_weights
    from madopd_distill.methods.routing_core import confidence_route, route_shares

    assert max(confidence_weights([100, 0], tau=1.0)) == pytest.approx(0.731, abs=1e-3)
    conf = torch.tensor([[[0.9, 0.9, 0.2, 0.9]], [[0.1, 0.1, 0.8, 0.1]]])
    assert route_shares(confidence_route(conf), torch.ones(1, 4, dtype=torch.bool), 2) == [0.75, 0.25]


@pytest.mark.parametrize("name", ["mt_opd", "mad_opd", "opad", "tcod", "guided", "sage", "omni", "routing",
                                  "grpo", "gigpo", "atod"])
def test_hydra_method_config_matches_its_dataclass(name):
    import dataclasses
    from pathlib import Path

    import yaml

    from madopd_distill.methods import method_class

    path = Path(__file__).resolve().parents[2] / "leaderboards" / "conf" / "distill" / "method" / f"{name}.yaml"
    conf = yaml.safe_load(path.read_text())
    assert conf.pop("name") == name
    cls = method_class(name).Config
    defaults = cls().to_dict()
    assert set(conf) == {f.name for f in dataclasses.fields(cls)}
    assert conf == {k: list(v) if isinstance(v, tuple) else v for k, v in defaults.items()}
    cls.from_dict(conf)  # the YAML builds a valid config
