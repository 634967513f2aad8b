"""Checks that need no model, shared by every training entry point (``train``, ``sft``, the study).

Each raises :class:`InputError` with one line that says what to change; the CLIs print it and exit 2
before any model loads (see :func:`run_cli`). A crash after these checks keeps its traceback.
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Sequence


class InputError(ValueError):
    """Bad input found before anything is loaded; the message is one line."""


def one_line(e: BaseException | str) -> str:
    return " ".join(str(e).split())


def check_env(env_id: str) -> None:
    """``env_id`` is registered (built-in or a plugin); its engine is not started."""
    from madopd_envs.registry import UnknownEnvError, spec

    try:
        spec(env_id)
    except UnknownEnvError as e:
        raise InputError(one_line(e.args[0] if e.args else e)) from None


def check_model(what: str, name_or_path: str) -> None:
    """``name_or_path`` resolves to local weights (a folder, ``zoo:`` name or HF cache id), offline."""
    from madopd_agents.zoo import ModelUnavailableError, resolve_model

    try:
        resolve_model(name_or_path)
    except ModelUnavailableError as e:
        raise InputError(f"{what}: {str(e).splitlines()[0]}") from None


def check_method(name: str, args: dict[str, Any]) -> None:
    """``name`` is a method and ``args`` are fields of its config, with valid values."""
    from madopd_distill.methods import method_class

    try:
        method_class(name).Config.from_dict(dict(args))
    except (KeyError, TypeError, ValueError) as e:
        message = e.args[0] if e.args and isinstance(e.args[0], str) else str(e)  # KeyError's str() quotes it
        raise InputError(f"method {name}: {one_line(message.splitlines()[0])}") from None


def check_steps(steps: int) -> None:
    if steps < 1:
        raise InputError(f"steps={steps}: a run of 0 steps trains nothing; give steps >= 1")


def held_out_tasks(env_id: str, env_kwargs: dict[str, Any], train_split: str, train_ids: Callable[[list[str]], list[str]],
                   eval_split: str, eval_ids: Callable[[list[str]], list[str]],
                   eval_needed: int = 0) -> tuple[list[str], list[str]]:
    """(train ids, eval ids) from the env's own task lists, given the functions that cut each window
    out of its split; raises when a window is empty or too short, or when the two overlap (held-out
    means disjoint). One implementation for the train CLI and the study."""
    from madopd_envs.registry import make

    env = make(env_id, **env_kwargs)
    try:
        splits = {s: list(env.tasks(s)) for s in {train_split, eval_split}}
    except (KeyError, ValueError) as e:
        raise InputError(f"{env_id}: {str(e).splitlines()[0]}") from None
    finally:
        env.close()
    train, held = train_ids(splits[train_split]), eval_ids(splits[eval_split])
    if not train:
        raise InputError(f"train: {env_id} split {train_split!r} gives no training task")
    if eval_needed and len(held) < eval_needed:
        raise InputError(f"eval: split {eval_split!r} has {len(splits[eval_split])} tasks; asked for {eval_needed} "
                         f"past its first_task")
    check_disjoint(train_split, train, eval_split, held)
    return train, held


def check_eval_window(env_id: str, env_kwargs: dict[str, Any], train_split: str,
                      train_ids: Callable[[list[str]], list[str]], eval_split: str,
                      eval_ids: Callable[[list[str]], list[str]]) -> None:
    """:func:`held_out_tasks` for a CLI: an eval window past its split's end or overlapping the
    training tasks is an :class:`InputError`."""
    try:
        held_out_tasks(env_id, env_kwargs, train_split, train_ids, eval_split, eval_ids)
    except InputError:
        raise
    except ValueError as e:
        raise InputError(one_line(e)) from None


def check_disjoint(train_split: str, train_ids: Sequence[str], eval_split: str, eval_ids: Sequence[str]) -> None:
    both = sorted(set(train_ids) & set(eval_ids)) if train_split == eval_split else []
    if both:
        raise InputError(f"train and eval tasks overlap ({len(both)} tasks, e.g. {both[0]!r}): held-out means "
                         f"disjoint; move eval.first_task past the training tasks or use another eval.split")


def run_cli(main: Callable[[], Any], errors: Sequence[type[BaseException]] = (), argv: Sequence[str] = (),
            doc: str | None = None) -> None:
    """Run ``main``; an :class:`InputError` (or one of ``errors``) prints one line and exits 2.
    ``-h``/``--help`` in ``argv`` prints ``doc`` instead."""
    if doc and {"-h", "--help"} & set(argv):
        print(doc)
        return
    try:
        main()
    except (InputError, *errors) as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        sys.exit(2)


def compose(config_dir: str, config_name: str, overrides: list[str]) -> dict[str, Any]:
    """The Hydra config (``config_name`` in ``config_dir`` with ``overrides``) as a plain dict; a bad
    override, an unknown key or a missing mandatory value raises :class:`InputError`.

    Hydra's compose API rather than ``@hydra.main``: its error wrapper ("Error executing job ...
    HYDRA_FULL_ERROR") hides one-line messages under a stack trace.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
            cfg = hydra_compose(config_name=config_name, overrides=overrides)
        d = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except MissingMandatoryValue as e:
        raise InputError(f"{e.full_key} is required: give {e.full_key}=<value>") from None
    except (HydraException, OmegaConfBaseException) as e:
        message = one_line(str(e).split("\n    full_key")[0])
        if bad := _unparsable(overrides):  # Hydra's grammar error does not say which override
            message = f"{bad!r}: {message}"
        if message.startswith("Could not override"):  # Hydra's hint (+key=...) would only fail later
            message = f"{message.split('.')[0]}: no such key in {config_name}.yaml ({config_dir})"
        raise InputError(message) from None
    d.pop("hydra", None)
    return d


def _unparsable(overrides: list[str]) -> str | None:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    for o in overrides:
        try:
            parser.parse_override(o)
        except HydraException:
            return o
    return None
