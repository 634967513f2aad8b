"""The teacher zoo: a recipe builds at toy size through the CLI, names resolve, bad recipes fail in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from madopd_distill.zoo import Recipe, RecipeError, load_recipe
from madopd_distill.zoo.build import calibration_table, expected_calibration_error, train
from madopd_distill.zoo.data import State, collect_states, judge_samples

REPO = Path(__file__).resolve().parents[2]
# The simonsays recipe at toy size: a few tasks, a few steps (seconds, not the full build's minutes); the
# properties are measured and recorded but do not fail the toy build (a toy cannot have them).
TOY = ["train_tasks.count=12", "calibration_tasks.count=4", "heldout_tasks.count=3", "max_new_tokens=12",
       "bases.0.train.steps=3", "bases.1.train.steps=4", "bases.1.check_every=2", "properties.check=false"] + [
       f"teachers.{k}.{stage}.steps=2" for k in (0, 1, 2) for stage in ("policy", "protocol")] + [
       f"teachers.{k}.protocol.batch_samples=8" for k in (0, 1, 2)]
MODELS = {"teacher", "teacher_a", "teacher_b", "student"}

def zoo(args: list[str], cache: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "MADOPD_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "madopd_agents.zoo", *args], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=timeout)


@pytest.fixture(scope="module")
def toy_zoo(tmp_path_factory: pytest.TempPathFactory):
    """The simonsays recipe built once at toy size, in-process, into a private cache."""
    from madopd_distill.zoo.build import build

    cache = tmp_path_factory.mktemp("zoocache")
    saved = os.environ.get("MADOPD_CACHE")
    os.environ["MADOPD_CACHE"] = str(cache)
    try:
        index = build(load_recipe("simonsays", [*TOY, "name=toyzoo"]), command="test")
        yield cache, index
    finally:
        os.environ.pop("MADOPD_CACHE") if saved is None else os.environ.__setitem__("MADOPD_CACHE", saved)


def test_toy_build_writes_models_cards_and_index(toy_zoo) -> None:
    cache, index = toy_zoo
    listed = json.loads(zoo(["list", "--json"], cache).stdout)
    mine = {k: v for k, v in listed.items() if k.startswith("toyzoo/")}
    assert set(mine) == {f"toyzoo/{m}" for m in MODELS}
    for name, card in mine.items():
        folder = Path(card["path"])
        assert folder.parent == cache / "zoo" / "toyzoo"
        assert (folder / "model.safetensors").is_file() and (folder / "README.md").is_file()
        assert card["parameters"] > 0 and card["size_bytes"] > 0 and card["license"] and card["base"]
        assert "heldout_plain_accuracy" in card and "heldout_episodes" in card
    assert mine["toyzoo/student"]["parameters"] < mine["toyzoo/teacher_a"]["parameters"]
    teacher = mine["toyzoo/teacher_a"]
    assert set(teacher["calibration"]) >= {"apple", "other"} and set(teacher["judge"]) == {"two", "three"}
    assert {"tag_parse_rate", "ece_round1", "right_teacher_favoured", "scoring_context_accuracy"} <= set(index["debate"])
    assert json.loads((cache / "zoo" / "toyzoo" / "zoo.json").read_text())["models"].keys() == MODELS
    # zoo v2: pretrained bases, the student stopped by its competence check, the properties recorded
    assert index["bases"]["teacher_base"]["fit"]["steps"] == 3 and index["bases"]["student_base"]["fit"]["steps"] <= 4
    assert mine["toyzoo/student"]["base"] == "student_base" and "median_p_teacher_action_where_wrong" in mine["toyzoo/student"]["soft_errors"]
    assert "oracle_by_kind_episodes" in index["debate"] and mine["toyzoo/teacher_a"]["confuse"] == {"tangerine": "orange"}
    assert {"teacher success (reference teacher)", "oracle by kind success over the best team member"} <= set(index["properties"])
    assert all(set(v) == {"value", "rule", "passed"} for v in index["properties"].values())
    toks = {(Path(c["path"]) / "tokenizer.json").read_text() for c in mine.values()}
    assert len(toks) == 1  # one tokenizer for the whole recipe


def test_built_models_resolve_as_names_and_agent_cards(toy_zoo, monkeypatch: pytest.MonkeyPatch) -> None:
    from madopd_agents.registry import get_card
    from madopd_agents.zoo import ModelUnavailableError, resolve_model

    cache, _ = toy_zoo
    monkeypatch.setenv("MADOPD_CACHE", str(cache))
    assert resolve_model("zoo:toyzoo/teacher_b") == cache / "zoo" / "toyzoo" / "teacher_b"
    card = get_card("toyzoo/student")
    assert card.backend == "hf" and card.model == "zoo:toyzoo/student"
    assert card.prompt == {"show_actions": False, "history": 0} and card.sampling["temperature"] == 0.0
    with pytest.raises(ModelUnavailableError, match="python -m madopd_agents.zoo build toyzoo"):
        resolve_model("zoo:toyzoo/nobody")


def test_training_is_deterministic_under_a_seed() -> None:
    from madopd_agents.zoo import build_tokenizer, tiny_qwen3
    from madopd_distill.zoo.recipe import TrainSpec

    pairs = [([{"role": "user", "content": f"say {w}"}], f"<action>{w}</action>") for w in ("a", "bb", "ccc", "dd")]
    tok = build_tokenizer([c[0]["content"] + t for c, t in pairs], vocab_size=300)
    weights = []
    for _ in range(2):
        model = tiny_qwen3(tok, "S", seed=3, num_hidden_layers=1)
        train(model, tok, pairs, TrainSpec(steps=3, batch_samples=2), seed=5, what="det")
        weights.append({k: v.clone() for k, v in model.state_dict().items()})
    assert all((weights[0][k] == weights[1][k]).all() for k in weights[0])


def test_calibration_and_ece_by_hand() -> None:
    states = [State("t", 0, [], "a", "apple"), State("t", 1, [], "b", "apple"), State("t", 2, [], "c", "other")]
    # apple: 1 right of 2 -> (1+1)/(2+2) = 50; other: 0 of 1 -> 1/3 = 33; unseen kind: 1/2 = 50
    assert calibration_table(["a", "x", "y"], states, ["apple", "pear"]) == {"apple": 50, "pear": 50, "other": 33}
    # bin [0.9, 1.0]: conf 0.9 twice, 1 right of 2 -> |0.5 - 0.9| = 0.4 over half the mass; bin [0.2, 0.3): 0.2 vs 0 -> 0.2
    assert expected_calibration_error([0.9, 0.9, 0.2, 0.2], [True, False, False, False]) == pytest.approx(0.3)


def test_judge_ground_truth_comes_from_the_env() -> None:
    recipe = load_recipe("simonsays", ["train_tasks.count=3"])
    states = collect_states(recipe, recipe.train_tasks, judge_candidates=3, seed=0)
    assert [s.turn for s in states[:4]] == [0, 1, 2, 3]  # every turn of the expert's 4-turn game
    for s in states:
        labels = {c.reply: c.label for c in s.candidates}
        assert labels[f"<action>{s.expert_action}</action>"] == "skip"
        assert all(lab == "strong" for reply, lab in labels.items() if reply != f"<action>{s.expert_action}</action>")
        two = {t for _, t in judge_samples(s, "two")}
        assert two <= {"<<JUDGE=skip>>", "<<JUDGE=intervene>>"}


def test_bad_recipes_fail_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from madopd_distill.zoo.cli import build_main

    for args, needle in [(["simonsays", "env=madopd/NoSuchEnv-v0"], "NoSuchEnv"),
                         (["no_such_recipe"], "no zoo recipe"),
                         (["simonsays", *[f"teachers.{k}.base=/nowhere/model" for k in (0, 1, 2)],
                           "students.0.base=/nowhere/model"], "/nowhere/model"),
                         (["simonsays", "heldout_tasks.first=0"], "overlap"),
                         (["simonsays", "teachers.0.policy.steps=-1"], "steps >= 0"),
                         (["simonsays", "students.0.train.lr=fast"], "train.lr must be a float, got 'fast'")]:
        assert build_main(args) == 2, args
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and needle in err, (args, err)
    r = zoo(["build", "simonsays", "env=madopd/NoSuchEnv-v0"], tmp_path)  # the real CLI, once
    assert r.returncode == 2 and r.stderr.strip().startswith("error:") and len(r.stderr.strip().splitlines()) == 1
    assert load_recipe("simonsays", ["students.0.train.lr=1e-3"]).students[0].train.lr == 0.001  # not a str
    with pytest.raises(RecipeError, match="share one tokenizer"):
        load_recipe("simonsays", ["teachers.0.base=zoo:smollm2-135m"])


def test_bases_with_different_tokenizers_are_refused(tmp_path: Path) -> None:
    from madopd_agents.zoo import _save_folder, build_tokenizer, tiny_qwen3
    from madopd_distill.zoo.build import check_bases

    for name, text in (("one", "apples and pears " * 50), ("two", "grapes and figs " * 50)):
        tok = build_tokenizer([text], vocab_size=280)
        _save_folder(tmp_path / name, tiny_qwen3(tok, "S", num_hidden_layers=1), tok)
    recipe = load_recipe("simonsays", [f"teachers.0.base={tmp_path / 'one'}", f"teachers.1.base={tmp_path / 'two'}",
                                       f"teachers.2.base={tmp_path / 'one'}", f"students.0.base={tmp_path / 'one'}"])
    with pytest.raises(RecipeError, match="different tokenizers"):
        check_bases(recipe)


def test_a_zoo_that_misses_a_property_is_refused(tmp_path: Path) -> None:
    """The toy build with its checks on: the models and figures are written, the CLI names what is missed
    in one line and exits 1."""
    r = zoo(["build", "simonsays", *[a for a in TOY if a != "properties.check=false"], "name=toyfail"], tmp_path)
    err = r.stderr.strip().splitlines()
    assert r.returncode == 1 and err[-1].startswith("error: zoo toyfail misses"), r.stderr[-2000:]
    assert "teacher success (reference teacher) (0.0 vs >= 0.8)" in err[-1]
    props = json.loads((tmp_path / "zoo" / "toyfail" / "zoo.json").read_text())["properties"]
    assert props["teacher success (reference teacher)"] == {"value": 0.0, "rule": ">= 0.8", "passed": False}


def test_property_rules_by_hand() -> None:
    from madopd_distill.zoo.build import check_properties

    recipe = load_recipe("simonsays")
    ep = lambda s: {"heldout_episodes": {"success_rate": s}}  # noqa: E731
    acc = lambda a, b: {"heldout_plain_accuracy": {"teacher_a_kinds": a, "teacher_b_kinds": b}}  # noqa: E731
    figures = {"teacher": {**ep(0.9), **acc(1, 1)}, "teacher_a": {**ep(0.7), **acc(1.0, 0.5)},
               "teacher_b": {**ep(0.65), **acc(0.6, 1.0)},
               "student": {**ep(0.45), "soft_errors": {"median_p_teacher_action_where_wrong": 0.2}}}
    debate = {"oracle_by_kind_episodes": {"success_rate": 0.95}}
    assert all(v["passed"] for v in check_properties(recipe, figures, debate).values())
    figures["student"]["heldout_episodes"]["success_rate"] = 0.46  # more than half of 0.9
    figures["teacher_b"]["heldout_plain_accuracy"]["teacher_a_kinds"] = 0.85  # gap 0.15 on teacher_a's kinds
    debate["oracle_by_kind_episodes"]["success_rate"] = 0.7  # not above the best member (0.7)
    failed = {k for k, v in check_properties(recipe, figures, debate).items() if not v["passed"]}
    assert failed == {"student success", "teacher_a over teacher_b on teacher_a's kinds (state accuracy gap)",
                      "oracle by kind success over the best team member"}


def test_recipe_checks() -> None:
    with pytest.raises(RecipeError, match="properties: no teacher 'nobody'"):
        load_recipe("simonsays", ["properties.team=[teacher_a,nobody]"])
    with pytest.raises(RecipeError, match="until_accuracy must be in"):
        load_recipe("simonsays", ["bases.1.until_accuracy=1.5"])
    with pytest.raises(RecipeError, match="strengths"):
        load_recipe("simonsays", ["teachers.0.strengths=[kiwi]"])
    with pytest.raises(RecipeError, match="student student: strengths"):
        load_recipe("simonsays", ["students.0.strengths=[kiwi]"])
    with pytest.raises(RecipeError, match=">= 2 teachers"):
        Recipe.from_dict({"name": "x", "env": "madopd/TWX-Coin-v0", "kinds": ["a"], "students": [{"name": "s"}],
                          "teachers": [{"name": "t", "strengths": ["a"]}]})
    r = load_recipe("simonsays")
    assert r.kind_of("Simon says, 'eat grapefruit'.") == "grapefruit"
    assert r.kind_of("a grape and an apple") == "grape" and r.kind_of("Simon says, 'sit down'.") == "other"


def test_a_build_seed_reseeds_every_model_and_seed_0_is_the_recipe_as_written() -> None:
    def seeds(r: Recipe) -> list[int]:
        return [m.seed for m in [*r.bases, *r.teachers, *r.students]]

    written = load_recipe("simonsays")
    assert seeds(written.with_build_seed()) == seeds(written)
    other = load_recipe("simonsays", ["seed=2", "name=simonsays_seed2"])
    assert seeds(other.with_build_seed()) == [s + 200 for s in seeds(written)]
    assert seeds(other) == seeds(written)  # the recipe itself is left as loaded


def test_every_recipe_builds_at_toy_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each recipe of leaderboards/conf/zoo/ (besides simonsays, built above) goes through the whole pipeline."""
    from madopd_distill.zoo.build import build

    monkeypatch.setenv("MADOPD_CACHE", str(tmp_path))
    recipes = sorted(p.stem for p in (REPO / "leaderboards" / "conf" / "zoo").glob("*.yaml"))
    assert "simonsays" in recipes and len(recipes) >= 2
    for name in recipes:
        if name == "simonsays":
            continue
        n_teachers = len(load_recipe(name).teachers)
        toy = ["train_tasks.count=4", "calibration_tasks.count=4", "heldout_tasks.count=3", "max_new_tokens=12",
               "students.0.episodes=4", "students.0.train.steps=2"] + [
               f"teachers.{k}.{stage}.steps=2" for k in range(n_teachers) for stage in ("policy", "protocol")] + [
               f"bases.{k}.train.steps=2" for k in range(len(load_recipe(name).bases))]
        index = build(load_recipe(name, toy), episodes_eval=False)
        assert set(index["models"]) == {t.name for t in load_recipe(name).teachers} | {s.name for s in load_recipe(name).students}
        assert all((tmp_path / "zoo" / name / m / "card.json").is_file() for m in index["models"])
        recipe = load_recipe(name, toy)
        for spec in recipe.students:  # a student with strengths learns only those kinds' states
            states = collect_states(recipe, recipe.train_tasks, seed=recipe.seed)
            wanted = [s for s in states if not spec.strengths or s.kind in spec.strengths]
            assert index["models"][spec.name]["sft_states"] == len(wanted) > 0  # every episode is chosen
            if spec.strengths:
                assert len(wanted) < len(states) and index["models"][spec.name]["strengths"] == spec.strengths


def test_calibration_by_kind_and_verb() -> None:
    from madopd_distill.zoo.build import stated_confidence

    states = [State("t", 0, [], "read book", "apple"), State("t", 1, [], "take apple", "apple"),
              State("t", 2, [], "take apple", "apple")]
    actions = ["read book", "take pear", "take pear"]  # right when reading, wrong when taking
    table = calibration_table(actions, states, ["apple"], by="kind_and_verb")
    assert table["apple"] == 40 and table["apple|read"] == 67 and table["apple|take"] == 25
    assert stated_confidence(table, states[1], "take pear", "kind_and_verb") == 25
    assert stated_confidence(table, states[1], "look around", "kind_and_verb") == 40  # unseen verb: the kind's
    assert stated_confidence(table, states[1], "take pear", "kind") == 40
