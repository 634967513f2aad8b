"""A study's configuration: what is compared, on what, with which budget; checked before any model loads.

Study configs are YAML in ``leaderboards/conf/study/<name>.yaml`` (Hydra compose, so
``key=value`` overrides work); every key is a field of :class:`StudyConfig` below.
"""

from __future__ import annotations

import copy
import fnmatch
import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BASELINES = ("sft", "seqkd")  # supervised baselines run through madopd_distill.sft
LABEL = re.compile(r"^[A-Za-z0-9_.@+-]+$")


class StudyError(ValueError):
    """A study config that cannot run; the message is one line and says what to change."""


def _build(cls: type, values: dict[str, Any] | None, what: str) -> Any:
    """The trainer's checked construction, its unknown-key error as a :class:`StudyError`."""
    from madopd_distill.trainer import _from_dict

    try:
        return _from_dict(cls, values, what)
    except StudyError:
        raise
    except ValueError as e:
        raise StudyError(str(e)) from None


@dataclass
class TaskSet:
    """Tasks ``first_task .. first_task + num_tasks - 1`` of ``split`` (in the env's order; ``None``: to the end).

    The training set always starts at task 0 (the trainer's ``num_train_tasks`` window).
    """

    split: str = "train"
    first_task: int = 0
    num_tasks: int | None = None

    def ids(self, all_ids: list[str]) -> list[str]:
        end = None if self.num_tasks is None else self.first_task + self.num_tasks
        return list(all_ids)[self.first_task: end]


@dataclass
class EvalSet(TaskSet):
    """The held-out set every model is evaluated on, through ``madopd_envs.eval``.

    Attributes:
        seeds: episode seeds (each replays the tasks once).
        max_steps: actions per episode (``None``: the budget's ``max_env_steps``).
        temperature: sampling temperature of the evaluated models (0: greedy).
        num_envs: env workers of each eval process.
        curve_every: the trainer also evaluates every N steps (training curves; 0: no curves).
        curve_tasks: how many of the eval tasks those in-training evals use (``None``: all).
        probe_states: at each curve step, KL and greedy agreement with the reference teacher on this
            many fixed held-out states (the reference teacher's own, on the curve tasks; 0: none).
    """

    seeds: list[int] = field(default_factory=lambda: [0])
    max_steps: int | None = None
    temperature: float = 0.0
    num_envs: int = 2
    curve_every: int = 0
    curve_tasks: int | None = None
    probe_states: int = 64


@dataclass
class Budget:
    """What every cell may spend: optimizer steps, rollout tasks per step (x group size), tokens per
    turn and env steps per episode. SFT / SeqKD cells see the same number of episodes
    (``steps * tasks_per_step * group_size``)."""

    steps: int = 100
    tasks_per_step: int = 8
    group_size: int = 1
    max_new_tokens: int = 64
    max_env_steps: int | None = 20

    def __post_init__(self) -> None:
        bad = [k for k in ("steps", "tasks_per_step", "group_size", "max_new_tokens")
               if not isinstance(getattr(self, k), int) or getattr(self, k) < 1]
        if self.max_env_steps is not None and self.max_env_steps < 1:
            bad.append("max_env_steps")
        if bad:
            raise StudyError(f"budget: {', '.join(bad)} must be >= 1 (got "
                             f"{', '.join(f'{k}={getattr(self, k)}' for k in bad)})")

    @property
    def episodes(self) -> int:
        return self.steps * self.tasks_per_step * self.group_size


@dataclass
class MethodSpec:
    """One compared method (a row of the table).

    Attributes:
        method: a registered OPD method (``madopd_distill.methods.METHODS``), ``sft`` or ``seqkd``;
            defaults to the label, so ``opd: {}`` is enough.
        args: what this method changes over the study's ``base`` (method config fields; for
            ``sft``/``seqkd``: ``SFTConfig`` fields).
        teachers: names of the study's teachers this method uses (``None``: the study's ``team``);
            ``"@ref"`` names the study's reference teacher; a mapping ``{name, path}`` adds one,
            ``path: "@student"`` being the initial student (OmniOPD's anchor).
        overrides: raw Hydra overrides appended to the cell's command (expert use; not checked here).
    """

    method: str = ""
    args: dict[str, Any] = field(default_factory=dict)
    teachers: list[Any] | None = None
    overrides: list[str] = field(default_factory=list)


DIRECTIONS = ("greater", "less", "at_least")


@dataclass
class Claim:
    """A seed paper's headline claim, checked at this study's scale.

    ``metric``: ``success`` | ``score`` (held-out, paired hierarchical bootstrap) or ``kl_token`` |
    ``kl_traj`` (final ``ref/kl_*``, bootstrap over seeds); ``direction``: the paper says
    ``method`` is ``greater`` / ``less`` than ``baseline``, or ``at_least`` as good (it matches it:
    no worse by more than ``tolerance``). ``cheaper``: the claim is also that ``method`` spends less
    compute (token forwards: student tokens generated + teacher tokens scored) than ``baseline``.
    """

    paper: str
    claim: str
    method: str
    baseline: str = "opd"
    metric: str = "success"
    direction: str = "greater"
    tolerance: float = 0.05
    cheaper: bool = False

    def __post_init__(self) -> None:
        if self.metric not in ("success", "score", "kl_token", "kl_traj"):
            raise StudyError(f"claim {self.claim!r}: metric must be success, score, kl_token or kl_traj")
        if self.direction not in DIRECTIONS:
            raise StudyError(f"claim {self.claim!r}: direction must be one of {', '.join(DIRECTIONS)}")
        if self.tolerance < 0:
            raise StudyError(f"claim {self.claim!r}: tolerance must be >= 0")


@dataclass
class Gate:
    """Whether distillation works in this study's setting, decided before any claim is read.

    The study is *valid* when the reference ``method`` lifts the initial student on held-out
    ``metric`` (its paired difference's interval lies wholly above 0) and closes at least
    ``min_gap_closed`` of the initial student -> reference teacher gap. Otherwise every claim's
    verdict is replaced by :data:`INVALID` (the table stays): comparing variants of a method that does
    not work here says nothing about the papers. ``metric`` ``None``: success (score where the
    env has no success notion, see ``claim_metric``).
    """

    method: str = "opd"
    metric: str | None = None
    min_gap_closed: float = 0.5

    def __post_init__(self) -> None:
        if self.metric not in (None, "success", "score"):
            raise StudyError(f"gate.metric must be success or score, got {self.metric!r}")
        if not 0.0 <= self.min_gap_closed <= 1.0:
            raise StudyError(f"gate.min_gap_closed must be in [0, 1], got {self.min_gap_closed}")


INVALID = "invalid: distillation does not work in this setting"


@dataclass
class StudyConfig:
    """A comparative study: methods x seeds, one budget, one held-out set.

    Attributes:
        name: the study's name (``leaderboards/results/study-<name>/``).
        env / env_kwargs / prompt: the environment and the prompt format (``PromptFormat`` fields)
            shared by training and evaluation.
        train / eval: the training tasks and the held-out eval tasks; checked disjoint.
        student: the initial student (folder / ``zoo:<name>``; ``{build_seed}`` or ``build_seeds`` vary it).
        teachers: ``[{name, path, backend}]``; all share the student's tokenizer (checked).
        ref_teacher: the teacher of the common quality metric ``ref/kl_token``/``ref/kl_traj``, of the
            validity gate and of the single-teacher methods (``"@ref"`` in a method's teachers; default:
            the first).
        team: the teachers of the multi-teacher methods (a method whose ``teachers`` is unset; default:
            all): a zoo whose reference teacher knows everything debates with the two that split the kinds.
        build_seeds: ``None``; a template naming a model per seed, e.g. ``"{name}@seed{n}"``: seed
            ``n``'s cells start from ``student`` and use ``teachers`` formatted with it; or a list of
            zoo recipes, one per seed (``[peckingorder, peckingorder_seed1, ...]``): the i-th seed's
            cells use that build's models in place of ``zoo:<recipe>/...``. Either way the variance of
            the builds is part of the measured variance.
        seeds: the seeds of every method (>= 3 for a real study).
        budget: see :class:`Budget`.
        base: what every cell inherits: ``method`` (divergence, beta, reduction, sample_mode ...),
            ``rollout`` (``max_invalid_actions``, temperature, num_envs ...), ``optim``, and other
            ``TrainConfig`` keys (``micro_batch_tokens``, ``dtype``).
        methods: label -> :class:`MethodSpec`; ``opd`` is the reference of the paired differences.
        claims: the papers' claims, see :class:`Claim`.
        claim_metric: the metric of a claim that names none (``score`` where success is rare at this
            scale, as in long games the teachers seldom win).
        gate: see :class:`Gate` (default: OPD must lift the student and close half the gap).
        checkpoint_every: training checkpoints (a killed study resumes a cell from the last one).
        accelerate_config: an ``accelerate`` config file (e.g. ``leaderboards/conf/distill/accelerate/
            fsdp.yaml``, ``deepspeed_zero3.yaml``): OPD cells then run under ``accelerate launch`` with
            ``num_processes`` processes (``None``: one plain process per cell).
        output_dir / work_dir: committed results / training runs (models, checkpoints).
        description: one paragraph for results.md.
    """

    name: str
    env: str
    student: str
    teachers: list[dict[str, Any]]
    methods: dict[str, MethodSpec]
    seeds: list[int]
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    prompt: dict[str, Any] = field(default_factory=dict)
    train: TaskSet = field(default_factory=TaskSet)
    eval: EvalSet = field(default_factory=EvalSet)
    ref_teacher: str | None = None
    team: list[str] | None = None
    build_seeds: str | list[str] | None = None
    budget: Budget = field(default_factory=Budget)
    base: dict[str, Any] = field(default_factory=dict)
    claims: list[Claim] = field(default_factory=list)
    claim_metric: str = "success"
    gate: Gate = field(default_factory=Gate)
    checkpoint_every: int = 10
    accelerate_config: str | None = None
    num_processes: int = 1
    output_dir: str = ""
    work_dir: str = ""
    description: str = ""

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StudyConfig:
        d = copy.deepcopy(dict(d))
        for key in ("env_kwargs", "prompt", "base"):
            d[key] = d.get(key) or {}
        if not d.get("methods"):
            raise StudyError("methods: the study compares no method; list at least one (e.g. methods: {opd: {}})")
        if not isinstance(d["methods"], dict):
            raise StudyError("methods: a mapping label -> {method, args, teachers}")
        d["methods"] = {str(k): _build(MethodSpec, v, f"methods.{k}") for k, v in d["methods"].items()}
        d["train"] = _build(TaskSet, d.get("train"), "train")
        d["eval"] = _build(EvalSet, d.get("eval"), "eval")
        d["budget"] = _build(Budget, d.get("budget"), "budget")
        d["gate"] = _build(Gate, d.get("gate"), "gate")
        metric = d.get("claim_metric") or "success"
        d["claims"] = [_build(Claim, {"metric": metric, **(c or {})}, "claims[]") for c in d.get("claims") or []]
        missing = [k for k in ("name", "env", "student", "teachers", "seeds") if d.get(k) in (None, "")]
        if missing:
            raise StudyError(f"the study config needs {', '.join(missing)}")
        cfg = _build(cls, d, "study")
        if isinstance(cfg.build_seeds, list) and len(cfg.build_seeds) != len(cfg.seeds):
            raise StudyError(f"build_seeds: one zoo build per seed ({len(cfg.seeds)}), got {cfg.build_seeds}")
        cfg.output_dir = cfg.output_dir or f"leaderboards/results/study-{cfg.name}"
        cfg.work_dir = cfg.work_dir or f"runs/study-{cfg.name}"
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def hash(self) -> str:
        return config_hash(self.to_dict())


def config_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


# -- cells ----------------------------------------------------------------------------------------
@dataclass
class Cell:
    """One (method, seed): a training run in its own folder."""

    label: str
    method: str
    seed: int
    student: str
    teachers: list[dict[str, Any]]
    ref_teacher: dict[str, Any]
    args: dict[str, Any]
    overrides: list[str]

    @property
    def id(self) -> str:
        return f"{self.label}-s{self.seed}"

    @property
    def is_baseline(self) -> bool:
        return self.method in BASELINES


def model_for_seed(cfg: StudyConfig, ref: str, seed: int) -> str:
    """A model reference for seed ``seed``: ``{build_seed}`` filled, or ``build_seeds`` applied."""
    ref = ref.replace("{build_seed}", str(seed))
    if isinstance(cfg.build_seeds, list):
        _recipe, sep, model = ref.removeprefix("zoo:").partition("/")
        return f"zoo:{cfg.build_seeds[cfg.seeds.index(seed)]}/{model}" if ref.startswith("zoo:") and sep else ref
    return cfg.build_seeds.format(name=ref, n=seed) if cfg.build_seeds else ref


def _teacher_specs(cfg: StudyConfig, seed: int) -> list[dict[str, Any]]:
    out = []
    for t in cfg.teachers:
        t = dict(t)
        if "name" not in t or "path" not in t:
            raise StudyError(f"teachers: each needs a name and a path, got {t}")
        t["path"] = model_for_seed(cfg, str(t["path"]), seed)
        out.append({"backend": "hf", **t})
    return out


def build_cells(cfg: StudyConfig) -> list[Cell]:
    """Every (method, seed) cell with its fully resolved method args (base + the method's changes)."""
    from madopd_distill.methods import METHODS

    cells = []
    for label, spec in cfg.methods.items():
        if not LABEL.match(label):
            raise StudyError(f"methods: label {label!r} may use letters, digits and _ . @ + - only")
        method = spec.method or label
        if method not in METHODS and method not in BASELINES:
            import difflib

            close = difflib.get_close_matches(method, [*METHODS, *BASELINES], n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise StudyError(f"methods.{label}: unknown method {method!r}.{hint} "
                             f"Known: {', '.join(sorted([*METHODS, *BASELINES]))}.")
        for seed in cfg.seeds:
            teachers = _teacher_specs(cfg, seed)
            by_name = {t["name"]: t for t in teachers}
            ref_name = cfg.ref_teacher or teachers[0]["name"]
            if ref_name not in by_name:
                raise StudyError(f"ref_teacher {ref_name!r} is not one of the teachers {list(by_name)}")
            student = model_for_seed(cfg, cfg.student, seed)
            team = cfg.team if cfg.team is not None else list(by_name)
            chosen = []
            for t in (spec.teachers if spec.teachers is not None else team):
                if t == "@ref":
                    t = ref_name
                if isinstance(t, str):
                    if t not in by_name:
                        raise StudyError(f"methods.{label}.teachers: no teacher {t!r}; known: {list(by_name)}")
                    chosen.append(by_name[t])
                else:
                    t = {"backend": "hf", **dict(t)}
                    t["path"] = student if t.get("path") == "@student" else model_for_seed(cfg, str(t["path"]), seed)
                    chosen.append(t)
            if method in BASELINES:
                args = {**({"optim": dict(cfg.base["optim"])} if cfg.base.get("optim") else {}), **spec.args}
            else:
                args = {**dict(cfg.base.get("method") or {}), **spec.args}
            cells.append(Cell(label, method, int(seed), student, chosen, by_name[ref_name], args, list(spec.overrides)))
    return cells


def select_cells(cells: list[Cell], patterns: list[str] | None) -> list[Cell]:
    """``--cells`` selection: comma-separated ids or shell patterns (``opd-*``, ``*-s0``)."""
    if not patterns:
        return cells
    chosen = [c for c in cells if any(fnmatch.fnmatchcase(c.id, p) or fnmatch.fnmatchcase(c.label, p)
                                      for p in patterns)]
    if not chosen:
        raise StudyError(f"--cells {','.join(patterns)} matches no cell; cells: {', '.join(c.id for c in cells)}")
    return chosen


# -- checks that need no model --------------------------------------------------------------------
def check_methods(cfg: StudyConfig, cells: list[Cell]) -> None:
    """Each method's args are fields of its config, with valid values (its ``__post_init__``)."""
    from madopd_distill.preflight import check_method
    from madopd_distill.sft import SFTConfig

    seen: set[str] = set()
    for c in cells:
        if c.label in seen:
            continue
        seen.add(c.label)
        try:
            if c.is_baseline:
                SFTConfig.from_dict({"env": cfg.env, "model": "x", "teacher": "x", **c.args})
            else:
                check_method(c.method, c.args)
        except (TypeError, ValueError) as e:
            raise StudyError(f"methods.{c.label}: {str(e).splitlines()[0]}") from None
    if cfg.gate.method not in cfg.methods:  # after the methods themselves, so a misspelt method is named first
        raise StudyError(f"gate.method {cfg.gate.method!r} is not one of the methods {list(cfg.methods)}")


def check_tasks(cfg: StudyConfig) -> tuple[list[str], list[str]]:
    """(train ids, eval ids) from the env's task lists; raises when they overlap or are too few."""
    from madopd_distill.preflight import InputError, held_out_tasks

    if cfg.train.first_task != 0:
        raise StudyError("train.first_task: training tasks are the first num_tasks of train.split (set it to 0)")
    try:
        return held_out_tasks(cfg.env, cfg.env_kwargs, cfg.train.split, cfg.train.ids, cfg.eval.split, cfg.eval.ids,
                              eval_needed=cfg.eval.num_tasks or 1)
    except InputError as e:
        raise StudyError(str(e)) from None


def check_tokenizers(cells: list[Cell]) -> None:
    """Every teacher shares its student's tokenizer (tokenizers only: no model is loaded)."""
    from transformers import AutoTokenizer

    from madopd_agents.zoo import ModelUnavailableError, resolve_model

    cache: dict[str, Any] = {}

    def tok(ref: str) -> Any:
        if ref not in cache:
            try:
                cache[ref] = AutoTokenizer.from_pretrained(str(resolve_model(ref)), local_files_only=True)
            except ModelUnavailableError as e:
                raise StudyError(f"model {ref!r} is not available: {str(e).splitlines()[0]}") from None
            except (OSError, ValueError) as e:
                raise StudyError(f"model {ref!r}: cannot load its tokenizer: {str(e).splitlines()[0]}") from None
        return cache[ref]

    for c in cells:
        for t in [*c.teachers, c.ref_teacher]:
            if t.get("backend", "hf") != "hf":
                continue
            if tok(c.student).get_vocab() != tok(t["path"]).get_vocab():
                raise StudyError(f"teacher {t['name']!r} ({t['path']}) does not share the tokenizer of the student "
                                 f"{c.student!r}: token-level distillation needs one tokenizer; pick teachers "
                                 f"built with the student's")


def validate(cfg: StudyConfig, cells: list[Cell]) -> tuple[list[str], list[str]]:
    """All bad-input checks, cheapest first; nothing here loads a model."""
    if not cfg.seeds:
        raise StudyError("seeds: the seed list is empty; give at least one (3 or more for a real study)")
    if len(set(cfg.seeds)) != len(cfg.seeds):
        raise StudyError(f"seeds: {cfg.seeds} repeats a seed")
    if cfg.checkpoint_every < 1:
        raise StudyError("checkpoint_every must be >= 1")
    check_launcher(cfg)
    check_methods(cfg, cells)
    ids = check_tasks(cfg)
    check_tokenizers(cells)
    return ids


def check_launcher(cfg: StudyConfig) -> None:
    """The accelerate config exists and accelerate itself accepts it (parsed by its own loader)."""
    if cfg.num_processes < 1:
        raise StudyError(f"num_processes must be >= 1, got {cfg.num_processes}")
    if cfg.accelerate_config is None:
        if cfg.num_processes > 1:
            raise StudyError("num_processes > 1 needs accelerate_config (an accelerate config file)")
        return
    path = Path(cfg.accelerate_config)
    if not path.is_file():
        raise StudyError(f"accelerate_config: {path} does not exist (configs ship in leaderboards/conf/distill/accelerate/)")
    from accelerate.commands.config.config_args import load_config_from_file

    try:
        load_config_from_file(str(path))
    except Exception as e:  # accelerate's own validation: unknown keys, bad values
        raise StudyError(f"accelerate_config: accelerate rejects {path}: {str(e).splitlines()[0]}") from None


def hydra_path(d: Path) -> str:
    return "'file://" + str(d.resolve()).replace("'", "\\'") + "'"


def load_study(name: str, overrides: list[str], conf_dir: Path) -> StudyConfig:
    """Compose ``<conf_dir>/<name>.yaml`` (or a YAML path) with Hydra overrides."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    path, default_dir = Path(name), conf_dir
    if name.endswith((".yaml", ".yml")):
        if not path.is_file():
            raise StudyError(f"study config {path} does not exist")
        conf_dir, name = path.resolve().parent, path.stem
    elif not (conf_dir / f"{name}.yaml").is_file():
        known = sorted(p.stem for p in conf_dir.glob("*.yaml") if not p.stem.startswith("_"))  # _*: included parts
        raise StudyError(f"no study config {name!r} in {conf_dir}; known: {', '.join(known) or '(none)'}")
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir.resolve()), version_base="1.3"):
            # the repo's study folder stays searchable, so a study elsewhere can include `_methods`
            search = f"hydra.searchpath=[{hydra_path(default_dir)}]"
            raw = compose(config_name=name, overrides=[*overrides, search])
    except Exception as e:  # Hydra's override / interpolation errors
        raise StudyError(f"study {name}: {' '.join(str(e).split())}") from None
    d = OmegaConf.to_container(raw, resolve=True)
    d.setdefault("name", name)
    return StudyConfig.from_dict(d)
