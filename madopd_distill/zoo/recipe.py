"""A zoo recipe: which env, which teachers with which strengths, which students, how long to train.

Recipes are Hydra YAML files in ``leaderboards/conf/zoo/<name>.yaml``; ``Recipe.from_dict`` checks
every field before anything is built, so a bad recipe fails at once in one line.
"""

from __future__ import annotations

import copy

import re
from dataclasses import dataclass, field
from typing import Any

from madopd_distill.trainer import _from_dict


class RecipeError(ValueError):
    """A recipe that cannot be built; the message says what to change."""


@dataclass
class TaskRange:
    """Tasks ``first .. first + count - 1`` of the env's ``split``."""

    first: int = 0
    count: int = 100
    split: str = "train"

    def ids(self, all_ids: list[str]) -> list[str]:
        ids = all_ids[self.first: self.first + self.count]
        if len(ids) < self.count:
            raise RecipeError(f"split {self.split!r} has {len(all_ids)} tasks; the recipe asks for {self.count} "
                              f"from task {self.first}")
        return ids

    def overlaps(self, other: TaskRange) -> bool:
        return self.split == other.split and self.first < other.first + other.count and other.first < self.first + self.count


@dataclass
class TrainSpec:
    """Supervised training of one model: at most ``steps`` optimizer steps, stopping early once the
    mean loss of the last 20 steps is below ``until_loss`` (``None``: never), so a teacher whose words
    are harder to learn gets the steps it needs and an easy one stops."""

    steps: int = 300
    batch_samples: int = 32
    lr: float = 5e-3
    warmup_steps: int = 20
    until_loss: float | None = None

    def __post_init__(self) -> None:
        try:  # YAML 1.1 reads ``1e-3`` (no dot) as a string
            self.lr = float(self.lr)
            self.until_loss = None if self.until_loss is None else float(self.until_loss)
        except (TypeError, ValueError):
            raise RecipeError(f"train: lr and until_loss must be numbers, got {self.lr!r} and {self.until_loss!r}") from None
        if self.steps < 0 or self.batch_samples < 1 or self.lr <= 0 or self.warmup_steps < 0:
            raise RecipeError("train: steps >= 0, batch_samples >= 1, lr > 0 and warmup_steps >= 0")
        if self.until_loss is not None and self.until_loss <= 0:
            raise RecipeError("train: until_loss must be > 0 (or null)")


@dataclass
class BaseSpec:
    """A base model pretrained by the build (zoo v2): next-token loss on *every* token of noisy-expert
    transcripts of the train states (the expert's action with probability ``1 - pretrain_noise``, else a
    random expert action of another state), so it learns to read the env before any post-training, and
    its mistakes stay soft. ``until_accuracy`` stops pretraining, checked every ``check_every`` steps,
    once its greedy accuracy on the calibration states reaches it: a base "pretrained to a competence"
    (the papers' students are generalists that play the env a little, not models that never saw it).
    Teachers and students name it as their ``base``."""

    name: str
    size: str = "S"
    overrides: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    train: TrainSpec = field(default_factory=lambda: TrainSpec(steps=1500, lr=3e-3))
    until_accuracy: float | None = None
    check_every: int = 50

    def __post_init__(self) -> None:
        if self.until_accuracy is not None and not 0.0 < self.until_accuracy <= 1.0:
            raise RecipeError(f"base {self.name}: until_accuracy must be in (0, 1], got {self.until_accuracy}")
        if self.check_every < 1:
            raise RecipeError(f"base {self.name}: check_every must be >= 1")


@dataclass
class Properties:
    """What a zoo must have for distillation to be testable on it (issue 26), measured on held-out
    tasks and checked by the build: a build that misses one says which and exits non-zero.

    Attributes:
        reference_teacher: the teacher OPD distils from (default: the first).
        team: the teachers that debate and split the kinds (MAD-OPD's, routing's; default: all).
        min_reference_success / min_teacher_success: held-out success of it / of every teacher.
        max_student_share: each student wins at most this share of what the reference teacher wins.
        min_soft_p: where a student's greedy action differs from the reference teacher's, the median
            probability it gives the teacher's action (soft errors: a gradient OPD can follow).
        min_kind_gap: every teacher of ``team`` is this much more accurate than each other team member on
            the held-out states of its own strengths (per-state accuracy: SimonSays mixes kinds within one
            episode), and the oracle by kind (each state played by the team member strong in its kind)
            wins more episodes than any member alone. ``team: []`` skips the multi-teacher checks.
        check: ``false`` records the figures without failing the build (tests of the build itself).
    """

    reference_teacher: str | None = None
    team: list[str] | None = None
    min_reference_success: float = 0.8
    min_teacher_success: float = 0.6
    max_student_share: float = 0.5
    min_soft_p: float = 0.05
    min_kind_gap: float = 0.2
    check: bool = True


@dataclass
class TeacherSpec:
    """A teacher: trained well on the states of its ``strengths`` kinds, and on ``other_fraction`` of
    the other states (so its skills are complementary to another teacher's in a measurable way).

    Attributes:
        name: the model's name in the zoo (``zoo:<recipe>/<name>``).
        strengths: kinds (see ``Recipe.kinds``) whose states it trains on.
        other_fraction: share of the other kinds' states kept in its action training.
        base: ``new`` (a tiny Qwen3 from config, ``size``/``overrides``), one of the recipe's ``bases``
            (pretrained by the build), or a pretrained model to fine-tune (folder, HF id in the local
            cache, ``zoo:smollm2-135m``); ``keep_layers`` keeps its first N decoder layers.
        confuse: ``{kind: word}``: in its policy data, the expert's action on a state of ``kind`` names
            ``word`` in place of ``kind`` (a teacher that mistakes one fruit for another: weak on that
            kind by construction, while it still reads every other state).
        policy: stage 1, the plain action policy. protocol: stage 2, every format (plain, debate,
            revision, scoring, judge) on top of stage 1.
    """

    name: str
    strengths: list[str] = field(default_factory=list)
    other_fraction: float = 0.0
    base: str = "new"
    keep_layers: int | None = None
    size: str = "S"
    overrides: dict[str, Any] = field(default_factory=dict)
    confuse: dict[str, str] = field(default_factory=dict)
    seed: int = 0
    policy: TrainSpec = field(default_factory=TrainSpec)
    protocol: TrainSpec = field(default_factory=TrainSpec)

    def __post_init__(self) -> None:
        if not 0.0 <= self.other_fraction <= 1.0:
            raise RecipeError(f"teacher {self.name}: other_fraction must be in [0, 1], got {self.other_fraction}")


@dataclass
class StudentSpec:
    """A student: smaller than the teachers, same tokenizer, a short weak SFT on expert turns of
    ``episodes`` training episodes (``base``/``keep_layers``/``size``/``overrides`` as for teachers).
    ``strengths``, when given, keeps only those kinds' states: a student that knows a few kinds well
    starts below the teachers yet reads its observations, so distillation has something to move."""

    name: str
    strengths: list[str] = field(default_factory=list)
    base: str = "new"
    keep_layers: int | None = None
    size: str = "S"
    overrides: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    episodes: int = 40
    train: TrainSpec = field(default_factory=lambda: TrainSpec(steps=40))


@dataclass
class Recipe:
    """Everything a zoo build needs (see ``leaderboards/conf/zoo/*.yaml`` for commented examples).

    Attributes:
        name: the recipe's name; models land in ``<cache>/zoo/<name>/<model>``.
        env / env_kwargs / prompt: the environment and the prompt format every model is trained in
            (the format OPD then uses: a model trained in one format is not tested in another).
        kinds: words that name a state's kind; a state's kind is the one found (as a whole word)
            earliest in its newest observation, else ``other``. Teachers' strengths are sets of kinds
            (``other`` included where wanted).
        train_tasks / calibration_tasks / heldout_tasks: disjoint task ranges: teachers learn on the
            first, their confidence is calibrated on the second, every figure is measured on the third.
        calibrate_by: ``kind``: a teacher's stated confidence is its measured accuracy in the state's kind;
            ``kind_and_verb``: in the state's kind *and* the verb of its own action (for envs whose kinds
            mix actions a teacher always gets right with ones it gets right only on its own kinds).
        vocab_size: the shared tokenizer's size (trained on the recipe's own texts).
        max_env_steps: episode cap when playing.
        max_new_tokens: generation cap of a reply (an action plus a confidence tag).
    """

    name: str
    env: str
    kinds: list[str]
    teachers: list[TeacherSpec]
    students: list[StudentSpec]
    bases: list[BaseSpec] = field(default_factory=list)
    pretrain_noise: float = 0.3
    properties: Properties = field(default_factory=Properties)
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    prompt: dict[str, Any] = field(default_factory=dict)
    train_tasks: TaskRange = field(default_factory=lambda: TaskRange(0, 400))
    calibration_tasks: TaskRange = field(default_factory=lambda: TaskRange(800, 100))
    heldout_tasks: TaskRange = field(default_factory=lambda: TaskRange(900, 50))
    calibrate_by: str = "kind"
    vocab_size: int = 1024
    max_env_steps: int = 20
    max_new_tokens: int = 24
    seed: int = 0
    description: str = ""

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", self.name or ""):
            raise RecipeError(f"recipe name {self.name!r}: use letters, digits, '_', '-' and '.' only")
        if self.calibrate_by not in ("kind", "kind_and_verb"):
            raise RecipeError(f"calibrate_by must be 'kind' or 'kind_and_verb', got {self.calibrate_by!r}")
        if len(self.teachers) < 2:
            raise RecipeError(f"recipe {self.name}: a zoo needs >= 2 teachers (debates, routing); got {len(self.teachers)}")
        if not self.students:
            raise RecipeError(f"recipe {self.name}: name at least one student")
        own = {b.name for b in self.bases}
        bases = {m.base == "new" or m.base in own for m in [*self.teachers, *self.students]}
        if len(bases) > 1:
            raise RecipeError(f"recipe {self.name}: teachers and students share one tokenizer: build them all "
                              f"from base=new, or all from pretrained bases with the same tokenizer")
        if not 0.0 <= self.pretrain_noise < 1.0:
            raise RecipeError(f"recipe {self.name}: pretrain_noise must be in [0, 1), got {self.pretrain_noise}")
        names = [m.name for m in [*self.teachers, *self.students]]
        teacher_names = [t.name for t in self.teachers]
        props = self.properties
        for n in [props.reference_teacher, *(props.team or [])]:
            if n is not None and n not in teacher_names:
                raise RecipeError(f"properties: no teacher {n!r}; teachers: {teacher_names}")
        if len(set(names)) != len(names):
            raise RecipeError(f"recipe {self.name}: model names must be unique, got {names}")
        for t in self.teachers:
            unknown = set(t.strengths) - set(self.kinds) - {"other"}
            if unknown or not t.strengths:
                raise RecipeError(f"teacher {t.name}: strengths must be a non-empty subset of kinds {self.kinds} "
                                  f"(or 'other'); unknown: {sorted(unknown)}")
        for st in self.students:
            if unknown := set(st.strengths) - set(self.kinds) - {"other"}:
                raise RecipeError(f"student {st.name}: strengths must be a subset of kinds {self.kinds} "
                                  f"(or 'other'); unknown: {sorted(unknown)}")
        ranges = {"train_tasks": self.train_tasks, "calibration_tasks": self.calibration_tasks,
                  "heldout_tasks": self.heldout_tasks}
        items = list(ranges.items())
        for i, (a, ra) in enumerate(items):
            for b, rb in items[i + 1:]:
                if ra.overlaps(rb):
                    raise RecipeError(f"recipe {self.name}: {a} and {b} overlap; they must be disjoint")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Recipe:
        d = dict(d)
        try:
            for key in ("train_tasks", "calibration_tasks", "heldout_tasks"):
                if key in d:
                    d[key] = _from_dict(TaskRange, d[key], key)
            d["teachers"] = [_spec(TeacherSpec, t, ("policy", "protocol")) for t in d.get("teachers") or []]
            d["students"] = [_spec(StudentSpec, s, ("train",)) for s in d.get("students") or []]
            d["bases"] = [_spec(BaseSpec, b, ("train",)) for b in d.get("bases") or []]
            d["properties"] = _from_dict(Properties, d.get("properties") or {}, "properties")
            for key in ("env_kwargs", "prompt"):
                d[key] = d.get(key) or {}
            return _from_dict(cls, d, "zoo recipe")
        except RecipeError:
            raise
        except (TypeError, ValueError) as e:
            raise RecipeError(str(e)) from None

    def with_build_seed(self) -> Recipe:
        """This recipe with every base's, teacher's and student's seed offset by 100 x ``seed``, so that
        ``seed=1`` (a CLI override, with ``name=<recipe>_seed1``) is a whole new build -- new inits, data
        order, corpus noise and task subsets -- and ``seed=0`` the recipe as written (build variance)."""
        out = copy.deepcopy(self)
        for spec in [*out.bases, *out.teachers, *out.students]:
            spec.seed += 100 * self.seed
        return out

    def reference_teacher(self) -> str:
        """The teacher OPD distils from (``properties.reference_teacher``, default the first)."""
        return self.properties.reference_teacher or self.teachers[0].name

    def team(self) -> list[str]:
        """The teachers that debate and split the kinds (``properties.team``, default all)."""
        return self.properties.team if self.properties.team is not None else [t.name for t in self.teachers]

    def kind_of(self, observation: str) -> str:
        """The state's kind: the kind word found earliest in ``observation``, else ``other``."""
        found = [(m.start(), k) for k in self.kinds if (m := re.search(rf"\b{re.escape(k)}\b", observation))]
        return min(found)[1] if found else "other"


def _spec(cls: type, d: Any, nested: tuple[str, ...]) -> Any:
    d = dict(d or {})
    for key in nested:
        if key in d:
            d[key] = _from_dict(TrainSpec, d[key], key)
    d["overrides"] = d.get("overrides") or {}
    if cls is TeacherSpec:
        d["confuse"] = d.get("confuse") or {}
    return _from_dict(cls, d, cls.__name__)
