"""Memoise TextWorld's grammar and logic parsing: same traces, several times the steps per second.

Every ALFWorld step, stock TextWorld turns each admissible action into words by deriving the
grammar, and each derivation re-parses the same few hundred strings with tatsu
(``textgen._parse_and_convert``) and re-parses every rule condition as a conjunctive query
(``logic._parse_and_convert`` via ``Rule.parse_conjunctive_query``). The strings come from one grammar
and one domain, so the parses repeat; we parse each string once and hand out deep copies, because
TextWorld mutates what it gets (it sets ``symbol.context`` on derived symbols). Parsing is a pure
function of its arguments, so the output is byte-identical.

With parsing memoised, most of what is left is ``textgen.copy_context`` deep-copying the variable and
mapping dicts (entity infos, PDDL variables) for every symbol derived. Derivation only adds keys to
those dicts (``query`` updates them) and reads attributes of their values (the grammar's ``{o.name}``
expressions), so copying the dicts one level deep gives the same derivations; ``install(contexts=True)``
(the default) does that too. tests/envs/test_alfworld_speed.py hash-compares full traces against the
stock engine; benchmarks/bench_alfworld.py measures both patches side by side.

Loading and resetting a game costs more than stepping: every ``PddlState`` (one at ``load``, one at
each ``reset``) grounds the problem twice with fast-downward's ``pddl2sas`` (a pure function of the
domain and problem texts). ``install(translations=True)`` (the default) keeps the last
``TRANSLATION_CACHE_SIZE`` translations, so a reset, or a return to a recent game, skips grounding.

``install()`` patches the module-level functions in place (process-wide, idempotent);
``uninstall()`` restores them, which the side-by-side benchmark and the identity test use. Each
patched function is a switch: inside ``with mode(False):`` it runs the stock function, inside
``with mode(True):`` (or outside any ``mode``) the memoised one. ``ALFWorldEnv(fast=False)`` runs its
engine calls under ``mode(False)``, so it gets stock TextWorld even after a ``fast=True`` env installed
the patches in the same process.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import copy
from typing import Any, Callable, Iterator

_ORIGINALS: dict[str, tuple[Any, Callable[..., Any]]] = {}

# None: as installed; False: stock even where installed; True: memoised (where installed).
_MODE: contextvars.ContextVar[bool | None] = contextvars.ContextVar("madopd_fastgrammar_mode", default=None)


@contextlib.contextmanager
def mode(fast: bool | None) -> Iterator[None]:
    """Within the block (this thread or task), the patched functions run stock (``False``) or memoised
    (``True``, needs ``install()``); ``None`` leaves it to ``install()``/``uninstall()``."""
    token = _MODE.set(fast)
    try:
        yield
    finally:
        _MODE.reset(token)


def _switch(fast: Callable[..., Any], stock_fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fast`` unless the current ``mode`` asks for stock."""

    def switched(*args: Any, **kwargs: Any) -> Any:
        return (stock_fn if _MODE.get() is False else fast)(*args, **kwargs)

    switched.cache = getattr(fast, "cache", None)  # type: ignore[attr-defined]  (inspection in tests)
    switched.__wrapped__ = stock_fn  # type: ignore[attr-defined]
    return switched


def _memoised(parse: Callable[..., Any]) -> Callable[..., Any]:
    cache: dict[Any, Any] = {}

    def parse_and_convert(*args: Any, **kwargs: Any) -> Any:
        key = (args, tuple(sorted(kwargs.items())))
        try:
            hit = cache[key]
        except KeyError:
            hit = cache[key] = parse(*args, **kwargs)
        except TypeError:  # an unhashable argument: do what stock does
            return parse(*args, **kwargs)
        return copy.deepcopy(hit)

    parse_and_convert.cache = cache  # type: ignore[attr-defined]  (inspection in tests)
    parse_and_convert.__wrapped__ = parse  # type: ignore[attr-defined]
    return parse_and_convert


def _shallow_copy_context(context: dict[str, Any]) -> dict[str, Any]:
    """``textgen.copy_context`` with the variable/mapping dicts copied one level deep."""
    return {
        "state": context["state"],
        "facts": context["facts"],
        "variables": dict(context["variables"]),
        "mapping": dict(context["mapping"]),
        "entity_infos": context["entity_infos"],
    }


TRANSLATION_CACHE_SIZE = 16


def _cached_translation(pddl2sas: Callable[..., Any]) -> Callable[..., Any]:
    cache: collections.OrderedDict[Any, Any] = collections.OrderedDict()

    def cached_pddl2sas(domain: str, problem: str, verbose: bool = False, optimize: bool = False) -> Any:
        key = (domain, problem, bool(verbose), bool(optimize))
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
        # The parsed task is only read by PddlState (actions, types, objects, init): shared safely.
        result = cache[key] = pddl2sas(domain, problem, verbose=verbose, optimize=optimize)
        while len(cache) > TRANSLATION_CACHE_SIZE:
            cache.popitem(last=False)
        return result

    cached_pddl2sas.cache = cache  # type: ignore[attr-defined]
    cached_pddl2sas.__wrapped__ = pddl2sas  # type: ignore[attr-defined]
    return cached_pddl2sas


def install(*, contexts: bool = True, translations: bool = True) -> None:
    """Memoise the parses; with ``contexts`` copy derivation contexts shallowly; with
    ``translations`` cache fast-downward's grounding of recent games. Idempotent."""
    import fast_downward
    import textworld.envs.pddl.textgen as textgen
    import textworld.logic as logic

    for key, module in (("textgen", textgen), ("logic", logic)):
        if key not in _ORIGINALS:
            original = module._parse_and_convert
            _ORIGINALS[key] = (module, original)
            module._parse_and_convert = _switch(_memoised(original), original)
    if contexts and "contexts" not in _ORIGINALS:
        _ORIGINALS["contexts"] = (textgen, textgen.copy_context)
        textgen.copy_context = _switch(_shallow_copy_context, textgen.copy_context)
    if translations and "translations" not in _ORIGINALS:
        _ORIGINALS["translations"] = (fast_downward, fast_downward.pddl2sas)
        fast_downward.pddl2sas = _switch(_cached_translation(fast_downward.pddl2sas), fast_downward.pddl2sas)


def uninstall() -> None:
    """Restore stock parsing."""
    for key, (module, original) in list(_ORIGINALS.items()):
        attr = {"contexts": "copy_context", "translations": "pddl2sas"}.get(key, "_parse_and_convert")
        setattr(module, attr, original)
        del _ORIGINALS[key]


def installed() -> bool:
    return bool(_ORIGINALS)


@contextlib.contextmanager
def stock() -> Iterator[None]:
    """Run a block on stock (unmemoised) TextWorld, then restore the previous state."""
    was = installed()
    uninstall()
    try:
        yield
    finally:
        if was:
            install()
