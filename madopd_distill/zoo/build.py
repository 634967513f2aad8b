"""Build a zoo recipe: teachers that act, debate, judge and write; students that start weak.

Stages (each deterministic under the recipe's seed, one torch thread):

1. **states**: expert episodes on the recipe's train / calibration / held-out task ranges
   (:func:`madopd_distill.zoo.data.collect_states`), a tokenizer trained on the recipe's own texts;
   **bases** (zoo v2, where the recipe names ``bases``): models pretrained on noisy-expert transcripts
   of the train states, the small one stopped at a calibration accuracy (:func:`pretrain_base`);
2. **policy**: each teacher learns the plain action on the states of its strengths (plus
   ``other_fraction`` of the rest): teachers whose skills are complementary by construction;
3. **calibration**: each teacher plays the calibration states greedily; its accuracy per state kind
   (Laplace-smoothed) becomes the confidence it will state in that kind of state -- earned from its
   own measured reliability, never read from the expert's answer;
4. **protocol**: each teacher continues on every format at once: the plain action (its policy data
   again, so it does not forget), the blind proposal ``<action>a</action> <<CONFIDENCE=c>>`` with its
   *own* greedy action ``a`` and calibrated ``c``, its revisions (it keeps its proposal), the scoring
   context (its own action, so scoring in the debate context matches the plain state), and the
   judgements of student turns (ground truth from the env, see ``data.py``);
5. **students**: smaller models with the same tokenizer, a short weak SFT on expert turns;
6. **measurement** on the held-out states and tasks: per-subset accuracy, episode success, tag parse
   rate, expected calibration error, accuracy in the scoring context vs the plain state, the share of
   disagreements where the debate's weights favour the right teacher, judge agreement, the students'
   soft errors, the team's oracle by kind. The figures go to each model's card and to ``zoo.json``;
7. **properties** (``Recipe.properties``): what distillation needs of the zoo, each checked; a build
   that misses one writes everything, then raises :class:`PropertyError` (the CLI exits 1).
"""

from __future__ import annotations

import copy
import json
import random
import re
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from madopd_agents.base import SamplingParams
from madopd_distill.batch import micro_batches
from madopd_distill.methods import debate, sage
from madopd_distill.trajectory import Sample
from madopd_distill.zoo.data import (Conversation, State, action_reply, collect_states, debate_samples,
                                     judge_samples)
from madopd_distill.zoo.recipe import BaseSpec, Recipe, RecipeError, StudentSpec, TeacherSpec, TrainSpec

Pair = tuple[Conversation, str]
DEBATE_ROUNDS = 2  # MAD-OPD's default (madopd_distill/methods/mad_opd.py)


def _finite(x: Any) -> Any:
    """JSON has no NaN: undefined figures (no disagreement to judge, say) are written as null."""
    if isinstance(x, float) and x != x:
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite(v) for v in x]
    return x


_T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[zoo {time.perf_counter() - _T0:6.0f}s] {msg}", flush=True)


# -- training ----------------------------------------------------------------------------------------
def to_sample(tok: Any, conv: Conversation, target: str) -> Sample:
    ctx = list(tok.apply_chat_template(conv, add_generation_prompt=True, tokenize=True, return_dict=False))
    tgt = tok(target, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    return Sample(ctx + tgt, [False] * len(ctx) + [True] * len(tgt), [0.0] * (len(ctx) + len(tgt)))


def train(model: Any, tok: Any, pairs: Sequence[Pair], spec: TrainSpec, seed: int, what: str) -> dict[str, float]:
    """Cross-entropy on the targets, ``spec.steps`` steps of ``spec.batch_samples`` samples (epochs of a
    seeded shuffle), linear warm-up then constant learning rate."""
    return train_samples(model, tok, [to_sample(tok, c, t) for c, t in pairs], spec, seed, what)


def train_samples(model: Any, tok: Any, samples: Sequence[Sample], spec: TrainSpec, seed: int, what: str,
                  stop: Callable[[int], bool] | None = None) -> dict[str, float]:
    """:func:`train` on ready samples (their loss masks say which tokens count); ``stop(step)``, called
    after every step, ends training early when it returns true."""
    from madopd_distill.trainer import student_forward

    if spec.steps == 0 or not samples:
        return {"steps": 0, "loss_first": float("nan"), "loss_last": float("nan")}
    rng = random.Random(seed)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, spec.warmup_steps)))
    order: list[int] = []
    losses = []
    model.train()
    t0 = time.perf_counter()
    for step in range(spec.steps):
        if len(order) < spec.batch_samples:
            more = list(range(len(samples)))
            rng.shuffle(more)
            order += more
        chunk, order = [samples[i] for i in order[: spec.batch_samples]], order[spec.batch_samples:]
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for batch in micro_batches(chunk, "token_mean", tok.pad_token_id, 16384):
            loss = -(batch.reduce_weight * student_forward(model, batch).token_logprobs).sum()
            loss.backward()
            total += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(total)
        recent = sum(losses[-20:]) / len(losses[-20:])
        converged = spec.until_loss is not None and len(losses) >= 20 and recent < spec.until_loss
        if (step + 1) % max(1, spec.steps // 5) == 0 or converged:
            log(f"{what}: step {step + 1}/{spec.steps} loss {recent:.4f}{' (converged)' if converged else ''}")
        if converged or (stop is not None and stop(step + 1)):
            break
    model.eval()
    k = max(1, min(20, len(losses) // 5))
    return {"steps": len(losses), "samples": len(samples), "loss_first": sum(losses[:k]) / k,
            "loss_last": sum(losses[-k:]) / k, "seconds": time.perf_counter() - t0}


def check_bases(recipe: Recipe) -> Any:
    """The pretrained bases' shared tokenizer (``None`` for ``base=new`` recipes), checked before any
    training: a missing base or two tokenizers fail here, in one line."""
    from transformers import AutoTokenizer

    from madopd_agents.zoo import resolve_model

    bases = sorted({m.base for m in [*recipe.teachers, *recipe.students]} - {"new"} - {b.name for b in recipe.bases})
    toks = {b: AutoTokenizer.from_pretrained(str(resolve_model(b)), local_files_only=True) for b in bases}
    vocabs = {b: t.get_vocab() for b, t in toks.items()}
    if len({json.dumps(v, sort_keys=True) for v in vocabs.values()}) > 1:
        raise RecipeError(f"recipe {recipe.name}: the bases {bases} have different tokenizers; teachers and students "
                          f"of one recipe must share one (OPD compares their distributions token by token)")
    return next(iter(toks.values()), None)


def new_model(tok: Any, spec: TeacherSpec | StudentSpec, bases: dict[str, Any] | None = None) -> Any:
    """A tiny Qwen3 from config, a copy of one of the recipe's pretrained ``bases``, or the spec's
    pretrained base (its first ``keep_layers`` layers)."""
    from madopd_agents.zoo import tiny_qwen3

    if bases and spec.base in bases:
        return copy.deepcopy(bases[spec.base])
    if spec.base == "new":
        return tiny_qwen3(tok, size=spec.size, seed=spec.seed, **spec.overrides)
    from madopd_distill.trainer import load_causal_lm

    model, _ = load_causal_lm(spec.base)
    if spec.keep_layers:
        model.model.layers = model.model.layers[: spec.keep_layers]
        model.config.num_hidden_layers = len(model.model.layers)
        if getattr(model.config, "layer_types", None):
            model.config.layer_types = model.config.layer_types[: spec.keep_layers]
    return model


# -- zoo v2: pretrained bases ---------------------------------------------------------------------------
def pretrain_corpus(tok: Any, states: Sequence[State], noise: float, seed: int) -> list[Sample]:
    """Noisy-expert transcripts: each state's conversation and a reply whose action is the expert's with
    probability ``1 - noise``, else a random expert action of the recipe; next-token loss on every token
    (the context too: the base learns to read observations, not only to answer them)."""
    rng = random.Random(seed)
    pool = sorted({s.expert_action for s in states})
    out = []
    for s in states:
        action = s.expert_action if rng.random() >= noise else rng.choice(pool)
        smp = to_sample(tok, s.context, action_reply(action))
        out.append(Sample(smp.input_ids, [False] + [True] * (len(smp.input_ids) - 1), smp.sampler_logprobs))
    return out


def pretrain_base(recipe: Recipe, spec: BaseSpec, tok: Any, corpus: Sequence[Sample],
                  cal: Sequence[State]) -> tuple[Any, dict[str, Any]]:
    """One of the recipe's bases: pretrained on ``corpus`` until ``spec.until_accuracy`` is reached on the
    calibration states (or for ``spec.train.steps`` steps)."""
    from madopd_agents.hf import HFAgent
    from madopd_agents.zoo import tiny_qwen3

    model = tiny_qwen3(tok, size=spec.size, seed=spec.seed, **spec.overrides)
    reached: list[float] = []

    def competent(step: int) -> bool:
        if spec.until_accuracy is None or step % spec.check_every:
            return False
        agent = HFAgent(model, tok, name=spec.name, batch_size=64)
        reached.append(accuracy([parse_action(r) for r in generate(agent, [s.context for s in cal], recipe.max_new_tokens)], cal))
        log(f"{spec.name}: calibration accuracy {reached[-1]:.3f} at step {step}")
        return reached[-1] >= spec.until_accuracy

    fit = train_samples(model, tok, corpus, spec.train, spec.seed, f"{spec.name} pretrain", stop=competent)
    return model, {"fit": fit, "until_accuracy": spec.until_accuracy, "calibration_accuracy_at_stop": reached[-1] if reached else None,
                   "parameters": sum(p.numel() for p in model.parameters())}


def confused(action: str, confuse: dict[str, str]) -> str:
    """The action a teacher that mistakes ``kind`` for ``word`` writes (whole words only)."""
    for kind, word in confuse.items():
        action = re.sub(rf"\b{re.escape(kind)}\b", word, action)
    return action


def soft_errors(model: Any, tok: Any, held: Sequence[State], actions: Sequence[str], targets: Sequence[str]) -> dict[str, Any]:
    """Where the model's greedy ``actions`` differ from ``targets`` (the reference teacher's), the
    probability it gives the target reply: soft errors (a median well above 0) are what OPD can move."""
    from madopd_distill.trainer import student_forward

    wrong = [i for i, (a, t) in enumerate(zip(actions, targets)) if a != t]
    p: list[float] = []
    samples = [to_sample(tok, held[i].context, action_reply(targets[i])) for i in wrong]
    with torch.no_grad():
        for b in micro_batches(samples, "sample_sum", tok.pad_token_id, 16384):
            lp = student_forward(model, b).token_logprobs
            p += torch.zeros(len(b.samples)).index_add_(0, b.rows, lp).exp().tolist()
    return {"states": len(held), "wrong": len(wrong), "agreement": 1 - len(wrong) / max(1, len(held)),
            "median_p_teacher_action_where_wrong": statistics.median(p) if p else None,
            "p10_p_teacher_action_where_wrong": sorted(p)[len(p) // 10] if p else None}


class KindOracle:
    """Each turn played by the team member strong in the state's kind (the first member where none is):
    the better-of-both a multi-teacher method could reach."""

    name = "oracle_by_kind"

    def __init__(self, recipe: Recipe, team: Sequence[tuple[TeacherSpec, Any]]):
        self.recipe, self.team = recipe, list(team)

    def member(self, conv: Conversation) -> int:
        kind = self.recipe.kind_of(conv[-1]["content"])
        return next((k for k, (spec, _) in enumerate(self.team) if kind in spec.strengths), 0)

    def act(self, conversations: list[Conversation], sampling: SamplingParams, infos: Any = None) -> list[Any]:
        picks = [self.member(c) for c in conversations]
        out: list[Any] = [None] * len(conversations)
        for k, (_, agent) in enumerate(self.team):
            idx = [i for i, p in enumerate(picks) if p == k]
            for i, o in zip(idx, agent.act([conversations[i] for i in idx], sampling) if idx else []):
                out[i] = o
        return out

    def close(self) -> None:
        pass


# -- generation and measurement ----------------------------------------------------------------------
def generate(agent: Any, convs: Sequence[Conversation], max_new_tokens: int) -> list[str]:
    if not convs:
        return []
    sp = SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens)
    return [o.text for o in agent.act(list(convs), sp)]


def parse_action(reply: str) -> str:
    from madopd_envs.prompts import extract_action

    return extract_action(reply)[0]


def accuracy(actions: Sequence[str], states: Sequence[State]) -> float:
    return sum(a == s.expert_action for a, s in zip(actions, states)) / max(1, len(states))


def calibration_key(state: State, action: str) -> str:
    """The finer calibration bin: the state's kind and the verb of the teacher's own action."""
    return f"{state.kind}|{(action.split() or [''])[0]}"


def calibration_table(actions: Sequence[str], states: Sequence[State], kinds: Sequence[str],
                      by: str = "kind") -> dict[str, int]:
    """Per kind (and, with ``by="kind_and_verb"``, per kind and verb of the teacher's own action), the
    Laplace-smoothed accuracy ``(right + 1) / (n + 2)`` as an integer percentage."""
    bins: dict[str, list[bool]] = {k: [] for k in [*kinds, "other"]}
    for a, s in zip(actions, states):
        bins[s.kind].append(a == s.expert_action)
        if by == "kind_and_verb":
            bins.setdefault(calibration_key(s, a), []).append(a == s.expert_action)
    return {k: round(100 * (sum(h) + 1) / (len(h) + 2)) for k, h in bins.items()}


def stated_confidence(table: dict[str, int], state: State, action: str, by: str) -> int:
    """The confidence a teacher learns to state with ``action`` in ``state`` (the kind's value where the
    finer bin was never seen)."""
    if by == "kind_and_verb":
        return table.get(calibration_key(state, action), table[state.kind])
    return table[state.kind]


def expected_calibration_error(confidences: Sequence[float], correct: Sequence[bool], bins: int = 10) -> float:
    """ECE over equal-width confidence bins (confidences in [0, 1])."""
    n = len(confidences)
    if n == 0:
        return float("nan")
    err = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        idx = [i for i, c in enumerate(confidences) if lo <= c < hi or (b == bins - 1 and c == 1.0)]
        if idx:
            acc = sum(correct[i] for i in idx) / len(idx)
            conf = sum(confidences[i] for i in idx) / len(idx)
            err += len(idx) / n * abs(acc - conf)
    return err


class EpisodeEval:
    """Greedy success on the held-out tasks, through the collector OPD's evaluation uses; one set of
    env workers serves every model of the recipe (the student is swapped between runs)."""

    def __init__(self, recipe: Recipe, num_envs: int = 2):
        from madopd_distill.rollout import RolloutCollector, RolloutPrompt

        self.recipe = recipe
        self.sampling = SamplingParams(temperature=0.0, max_new_tokens=recipe.max_new_tokens)
        self.col = RolloutCollector(recipe.env, num_envs, None, self.sampling,
                                    prompt=RolloutPrompt.for_env(recipe.env, **recipe.prompt),
                                    env_kwargs=recipe.env_kwargs)
        split = recipe.heldout_tasks.split
        self.ids = recipe.heldout_tasks.ids(self.col.vec.call("tasks", split, indices=[0])[0])

    def __call__(self, agent: Any) -> dict[str, float]:
        from madopd_distill.trainer import evaluate

        self.col.student = agent
        m = evaluate(self.col, self.ids, self.recipe.heldout_tasks.split, self.sampling, self.recipe.max_env_steps)
        return {"success_rate": m["eval_success_rate"], "score": m["eval_score"], "episodes": m["eval_episodes"]}

    def close(self) -> None:
        self.col.close()


def subset_accuracy(actions: Sequence[str], states: Sequence[State], recipe: Recipe) -> dict[str, float]:
    """Accuracy on the held-out states of each teacher's strengths (the complementarity table)."""
    out = {"all": accuracy(actions, states)}
    for t in recipe.teachers:
        sel = [(a, s) for a, s in zip(actions, states) if s.kind in t.strengths]
        out[f"{t.name}_kinds"] = accuracy([a for a, _ in sel], [s for _, s in sel])
        out[f"{t.name}_kinds_states"] = len(sel)
    return out


def measure_debate(recipe: Recipe, specs: Sequence[TeacherSpec], agents: Sequence[Any], held: Sequence[State]) -> dict[str, Any]:
    """Run MAD-OPD's own debate over the held-out states with the built team and measure it."""
    gens = [lambda convs, a=a: generate(a, convs, recipe.max_new_tokens) for a in agents]
    debates = debate.run_debate([s.context for s in held], gens, rounds=DEBATE_ROUNDS, tau=1.0, mode="agentic")
    replies = [r for d in debates for rnd in d.replies for r in rnd]
    parsed = [debate.parse_confidence(r) for r in replies]
    confs, correct = [], []
    for d, s in zip(debates, held):
        for reply, c in zip(d.replies[0], [debate.parse_confidence(r) for r in d.replies[0]]):
            if c is not None:
                confs.append(c / 100.0)
                correct.append(parse_action(reply) == s.expert_action)
    favoured, disagreements = 0, 0
    for d, s in zip(debates, held):
        right = [parse_action(r) == s.expert_action for r in d.replies[-1]]
        if any(right) and not all(right):
            disagreements += 1
            best = max(range(len(right)), key=lambda k: d.weights[k])
            favoured += right[best] and d.weights[best] > min(d.weights)
    # Scoring context (what MAD-OPD's teachers condition on) vs the plain state, per teacher.
    scoring = {}
    for k, (spec, agent) in enumerate(zip(specs, agents)):
        convs = [debate.scoring_context(s.context, d.transcript(), k, "agentic") for s, d in zip(held, debates)]
        scoring[spec.name] = accuracy([parse_action(r) for r in generate(agent, convs, recipe.max_new_tokens)], held)
    weights = [d.weights for d in debates]
    return {
        "states": len(held),
        "tag_parse_rate": sum(c is not None for c in parsed) / max(1, len(parsed)),
        "ece_round1": expected_calibration_error(confs, correct),
        "disagreements": disagreements,
        "right_teacher_favoured": favoured / disagreements if disagreements else float("nan"),
        "scoring_context_accuracy": scoring,
        "weight_std_over_states": [float(torch.tensor([w[k] for w in weights]).std()) for k in range(len(agents))],
    }


def measure_judge(agent: Any, held: Sequence[State], scheme: str, max_new_tokens: int) -> dict[str, Any]:
    """The judge's agreement with the env's ground truth on held-out student turns (see ``data.py``)."""
    pairs = [p for s in held for p in judge_samples(s, scheme)]
    truth = [t.removeprefix("<<JUDGE=").removesuffix(">>") for _, t in pairs]
    got = [sage.parse_judgement(r, scheme) for r in generate(agent, [c for c, _ in pairs], max_new_tokens)]
    n = max(1, len(truth))
    return {
        "candidates": len(pairs),
        "parse_rate": sum(j is not None for j in got) / n,
        "agreement": sum(j == t for j, t in zip(got, truth)) / n,
        "truth_mix": {lab: truth.count(lab) / n for lab in sage.LEVELS[scheme]},
        "judged_mix": {lab: got.count(lab) / n for lab in sage.LEVELS[scheme]},
    }


# -- the build -----------------------------------------------------------------------------------------
def build(recipe: Recipe, command: str = "", out_root: Path | None = None, episodes_eval: bool = True) -> dict[str, Any]:
    """Build every model of ``recipe`` into ``<out_root>/<recipe>/<model>``; return the zoo index."""
    from madopd_agents.hf import HFAgent
    from madopd_agents.zoo import _save_folder, build_tokenizer, zoo_dir
    from madopd_distill.trainer import atomic_write

    torch.set_num_threads(1)
    t_start = time.perf_counter()
    recipe = recipe.with_build_seed()
    root = (out_root or zoo_dir()) / recipe.name
    root.mkdir(parents=True, exist_ok=True)

    log(f"{recipe.name}: collecting expert states on {recipe.env}")
    train_states = collect_states(recipe, recipe.train_tasks, seed=recipe.seed)
    cal_states = collect_states(recipe, recipe.calibration_tasks, judge_candidates=0, seed=recipe.seed + 1)
    held = collect_states(recipe, recipe.heldout_tasks, seed=recipe.seed + 2)
    log(f"states: train {len(train_states)}, calibration {len(cal_states)}, held-out {len(held)}")

    # One tokenizer for every model of the recipe, trained on the texts they will read and write.
    corpus: list[str] = []
    for s in train_states[:400]:
        for conv, target in [*debate_samples(s, 0, [s.expert_action] * len(recipe.teachers),
                                             [50] * len(recipe.teachers), DEBATE_ROUNDS),
                             *judge_samples(s, "two"), *judge_samples(s, "three")]:
            corpus += [m["content"] for m in conv] + [target]
    tok = check_bases(recipe)
    if tok is None:
        tok = build_tokenizer(corpus, vocab_size=recipe.vocab_size)

    def plain(states: Sequence[State], confuse: dict[str, str] | None = None) -> list[Pair]:
        return [(s.context, action_reply(confused(s.expert_action, confuse or {}))) for s in states]

    bases, figures = {}, {}
    if recipe.bases:
        corpus_samples = pretrain_corpus(tok, train_states, recipe.pretrain_noise, recipe.seed)
        for spec_b in recipe.bases:
            bases[spec_b.name], figures[f"base:{spec_b.name}"] = pretrain_base(recipe, spec_b, tok, corpus_samples, cal_states)

    teachers, agents = [], []
    for i, spec in enumerate(recipe.teachers):
        rng = random.Random(recipe.seed * 1000 + i)
        own = [s for s in train_states if s.kind in spec.strengths or rng.random() < spec.other_fraction]
        model = new_model(tok, spec, bases)
        fit = train(model, tok, plain(own, spec.confuse), spec.policy, spec.seed, f"{spec.name} policy")
        teachers.append((spec, model, own, fit))
        agents.append(HFAgent(model, tok, name=spec.name, batch_size=32))

    # Calibration and each teacher's own greedy actions (the debate targets), before protocol training.
    tables, own_actions = [], []
    for (spec, _, _, _), agent in zip(teachers, agents):
        cal_actions = [parse_action(r) for r in generate(agent, [s.context for s in cal_states], recipe.max_new_tokens)]
        tables.append(calibration_table(cal_actions, cal_states, recipe.kinds, recipe.calibrate_by))
        own_actions.append([parse_action(r) for r in generate(agent, [s.context for s in train_states],
                                                               recipe.max_new_tokens)])
        log(f"{spec.name} calibration (confidence per kind): {tables[-1]}")

    # The team debates (every teacher, unless the recipe names a team beside a reference teacher).
    ref_name = recipe.reference_teacher()
    team = [k for k, t in enumerate(recipe.teachers) if t.name in recipe.team()]
    for k, (spec, model, own, fit) in enumerate(teachers):
        pairs = plain(own, spec.confuse)
        for j, s in enumerate(train_states):
            if k in team:
                acts = [own_actions[t][j] for t in team]
                confs = [stated_confidence(tables[t], s, own_actions[t][j], recipe.calibrate_by) for t in team]
                pairs += debate_samples(s, team.index(k), acts, confs, DEBATE_ROUNDS)
            pairs += judge_samples(s, "two") + judge_samples(s, "three")
        fit2 = train(model, tok, pairs, spec.protocol, spec.seed + 1, f"{spec.name} protocol")
        figures[spec.name] = {"role": "teacher", "base": spec.base, "strengths": spec.strengths,
                              "other_fraction": spec.other_fraction, "confuse": spec.confuse,
                              "train_states": len(own), "calibration": tables[k],
                              "fit": {"policy": fit, "protocol": fit2}}

    episodes = EpisodeEval(recipe) if episodes_eval else None
    held_actions = {}
    for (spec, model, _, _), agent in zip(teachers, agents):
        acts = held_actions[spec.name] = [parse_action(r) for r in generate(agent, [s.context for s in held], recipe.max_new_tokens)]
        figures[spec.name]["heldout_plain_accuracy"] = subset_accuracy(acts, held, recipe)
        figures[spec.name]["judge"] = {scheme: measure_judge(agent, held, scheme, recipe.max_new_tokens)
                                       for scheme in sage.LEVELS}
        if episodes:
            figures[spec.name]["heldout_episodes"] = episodes(agent)
    debate_figures = measure_debate(recipe, [recipe.teachers[k] for k in team], [agents[k] for k in team], held)
    log(f"debate: {json.dumps(debate_figures)}")
    if episodes and len(team) >= 2:
        debate_figures["oracle_by_kind_episodes"] = episodes(KindOracle(recipe, [(recipe.teachers[k], agents[k]) for k in team]))

    students = []
    for spec_s in recipe.students:
        rng = random.Random(recipe.seed + 7)
        tasks = sorted({s.task_id for s in train_states})
        chosen = set(rng.sample(tasks, min(spec_s.episodes, len(tasks))))
        model = new_model(tok, spec_s, bases)
        kept = [s for s in train_states if s.task_id in chosen and (not spec_s.strengths or s.kind in spec_s.strengths)]
        fit = train(model, tok, plain(kept), spec_s.train, spec_s.seed, f"{spec_s.name} sft")
        agent = HFAgent(model, tok, name=spec_s.name, batch_size=32)
        acts = [parse_action(r) for r in generate(agent, [s.context for s in held], recipe.max_new_tokens)]
        figures[spec_s.name] = {"role": "student", "base": spec_s.base, "strengths": spec_s.strengths or "all",
                                "sft_episodes": len(chosen), "sft_states": len(kept), "fit": fit,
                                "heldout_plain_accuracy": subset_accuracy(acts, held, recipe),
                                "soft_errors": soft_errors(model, tok, held, acts, held_actions[ref_name])}
        if episodes:
            figures[spec_s.name]["heldout_episodes"] = episodes(agent)
        students.append((spec_s, model))
    if episodes:
        episodes.close()
    properties = check_properties(recipe, figures, debate_figures) if episodes else {}

    build_s = time.perf_counter() - t_start
    index = {"recipe": recipe.name, "env": recipe.env, "env_kwargs": recipe.env_kwargs, "prompt": recipe.prompt,
             "command": command, "seed": recipe.seed, "build_seconds": round(build_s, 1),
             "states": {"train": len(train_states), "calibration": len(cal_states), "heldout": len(held)},
             "debate": debate_figures, "properties": properties,
             "bases": {k.removeprefix("base:"): v for k, v in figures.items() if k.startswith("base:")}, "models": {}}
    for spec_m, model in [(t[0], t[1]) for t in teachers] + students:
        path = root / spec_m.name
        _save_folder(path, model, tok)
        entry = {"name": f"{recipe.name}/{spec_m.name}", **base_of(spec_m),
                 "parameters": sum(p.numel() for p in model.parameters()),
                 "size_bytes": sum(f.stat().st_size for f in path.iterdir() if f.is_file()), **figures[spec_m.name]}
        index["models"][spec_m.name] = entry
        write_card(path, recipe, entry, index)
    atomic_write(root / "zoo.json", json.dumps(_finite(index), indent=2))
    log(f"{recipe.name}: built {len(index['models'])} models in {build_s:.0f} s -> {root}")
    missed = [f"{k} ({v['value']} vs {v['rule']})" for k, v in properties.items() if not v["passed"]]
    if missed and recipe.properties.check:
        raise PropertyError(f"zoo {recipe.name} misses {len(missed)} required properties: {'; '.join(missed)} "
                            f"(figures in {root / 'zoo.json'})")
    return index


class PropertyError(RecipeError):
    """A built zoo that lacks a property distillation needs (see ``Properties``)."""


def check_properties(recipe: Recipe, figures: dict[str, Any], debate_figures: dict[str, Any]) -> dict[str, Any]:
    """Each required property (``Recipe.properties``) with its measured value, its rule and whether it holds."""
    props = recipe.properties
    out: dict[str, Any] = {}

    def rule(name: str, value: float | None, op: str, bound: float) -> None:
        ok = value is not None and (value >= bound if op == ">=" else value <= bound if op == "<=" else value > bound)
        out[name] = {"value": None if value is None else round(value, 4), "rule": f"{op} {round(bound, 4)}", "passed": bool(ok)}

    success = {t.name: figures[t.name]["heldout_episodes"]["success_rate"] for t in recipe.teachers}
    ref = recipe.reference_teacher()
    rule(f"{ref} success (reference teacher)", success[ref], ">=", props.min_reference_success)
    for name, v in success.items():
        rule(f"{name} success", v, ">=", props.min_teacher_success)
    for st in recipe.students:
        f = figures[st.name]
        rule(f"{st.name} success", f["heldout_episodes"]["success_rate"], "<=", props.max_student_share * success[ref])
        rule(f"{st.name} soft errors (median p of the teacher's action where wrong)",
             f["soft_errors"]["median_p_teacher_action_where_wrong"], ">=", props.min_soft_p)
    team = recipe.team()
    if len(team) >= 2 and "oracle_by_kind_episodes" in debate_figures:
        acc = {t.name: figures[t.name]["heldout_plain_accuracy"] for t in recipe.teachers}
        for a in team:
            for b in team:
                if a != b:
                    rule(f"{a} over {b} on {a}'s kinds (state accuracy gap)",
                         acc[a][f"{a}_kinds"] - acc[b][f"{a}_kinds"], ">=", props.min_kind_gap)
        rule("oracle by kind success over the best team member", debate_figures["oracle_by_kind_episodes"]["success_rate"],
             ">", max(success[n] for n in team))
    return out


def base_of(spec: TeacherSpec | StudentSpec) -> dict[str, str]:
    if spec.base == "new":
        return {"base": "tiny Qwen3 initialised from config (no pretrained weights); tokenizer trained on the "
                        "recipe's texts", "license": "Apache-2.0 (trained here from scratch on engine-generated data)"}
    layers = f", first {spec.keep_layers} layers" if spec.keep_layers else ""
    return {"base": f"{spec.base}{layers}, fine-tuned",
            "license": "the base model's licence (SmolLM2-135M-Instruct: Apache-2.0)" if "smollm2" in spec.base
            else "the base model's licence"}


def write_card(path: Path, recipe: Recipe, entry: dict[str, Any], index: dict[str, Any]) -> None:
    """``card.json`` (machine-readable) and ``README.md`` beside the weights."""
    from madopd_distill.trainer import atomic_write

    card = {**entry, "recipe": recipe.name, "env": recipe.env, "env_kwargs": recipe.env_kwargs,
            "prompt": recipe.prompt, "max_new_tokens": recipe.max_new_tokens, "command": index["command"],
            "build_seconds_whole_recipe": index["build_seconds"],
            "base": entry["base"], "license": entry["license"],
            "data": f"expert episodes of {recipe.env} {recipe.env_kwargs or ''} train tasks "
                    f"{recipe.train_tasks.first}..{recipe.train_tasks.first + recipe.train_tasks.count - 1}"}
    if entry["role"] == "teacher":
        card["debate"] = index["debate"]
    atomic_write(path / "card.json", json.dumps(_finite(card), indent=2))
    lines = [f"# {entry['name']}", "", f"Built by `{index['command'] or 'python -m madopd_agents.zoo build ' + recipe.name}`.",
             "", f"- role: {entry['role']}; parameters: {entry['parameters']:,}; size on disk: "
                 f"{entry['size_bytes'] / 1e6:.1f} MB; whole recipe built in {index['build_seconds']:.0f} s",
             f"- base: {card['base']}", f"- licence: {card['license']}", f"- data: {card['data']}", "",
             "Measured on the recipe's held-out states and tasks:", "", "```json",
             json.dumps(_finite({k: v for k, v in entry.items() if k != "name"}), indent=1), "```"]
    (path / "README.md").write_text("\n".join(lines) + "\n")
