"""Memoise TextWorld's grammar and logic parsing: same traces, several times the steps per second.

Every ALFWorld step, stock TextWorld turns each admissible action into words by deriving the
grammar, and each derivation re-parses the same few hundred strings with tatsu
(``textgen._parse_and_convert``) and re-parses every rule condition as a conjunctive query
(``logic._parse_and_convert`` via ``Rule.parse_conjunctive_query``). The strings come from one grammar
and one domain, so the parses repeat; we parse each string once and hand out deep copies, because
TextWorld mutates what it gets (it sets ``symbol.context`` on derived symbols). Parsing is a pure
function of its arguments, so the output is byte-identical (tests/envs/test_alfworld_speed.py
hash-compares full traces against the stock engine; benchmarks/bench_alfworld.py measures it).

``install()`` patches the two module-level functions in place (process-wide, idempotent);
``uninstall()`` restores them, which the side-by-side benchmark and the identity test use.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Any, Callable, Iterator

_ORIGINALS: dict[str, tuple[Any, Callable[..., Any]]] = {}


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


def _targets() -> dict[str, Any]:
    import textworld.envs.pddl.textgen as textgen
    import textworld.logic as logic

    return {"textgen": textgen, "logic": logic}


def install() -> None:
    """Memoise the parses (no-op when already installed)."""
    for name, module in _targets().items():
        if name not in _ORIGINALS:
            original = module._parse_and_convert
            _ORIGINALS[name] = (module, original)
            module._parse_and_convert = _memoised(original)


def uninstall() -> None:
    """Restore stock parsing."""
    for name, (module, original) in list(_ORIGINALS.items()):
        module._parse_and_convert = original
        del _ORIGINALS[name]


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
