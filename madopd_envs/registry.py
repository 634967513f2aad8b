"""The environment registry: ids ``<namespace>/<Name>-v<N>`` -> lazy ``"module:Class"`` entry points.

``register`` also registers with gymnasium, so ``gymnasium.make("madopd/ALFWorld-v0")`` works.
Heavy engines are imported only when an env is made; a missing engine fails with the exact
install command, an unknown id with close-match suggestions.

Built-ins live in the ``madopd/`` namespace. Other packages add envs (plugins) two ways:

- Gymnasium's ``"module:<id>"`` form (``my_bench:my_bench/Foo-v0``): the module is imported, then the
  id is looked up. Works with no packaging metadata at all, and in ``gymnasium.make`` too.
- the entry-point group ``madopd.envs``: each entry point names a module whose import registers its
  envs; its name is the namespace it registers (``my_bench = "my_bench"``).

Gymnasium dropped its entry-point loader (removed in 1.0; see Farama-Foundation/Gymnasium#535 and
Arcade-Learning-Environment#487) after it imported every plugin at ``import gymnasium`` (slow,
circular imports, a warning per plugin), swallowed plugin errors (envs silently missing), and warned
"Overriding environment ... already in registry" when a plugin was registered twice (the module
imported once by the loader and once by the user, or two copies of a package on ``sys.path``).
Here: nothing is imported at ``import madopd_envs``; a lookup miss imports only the plugins named
after the id's namespace, then the rest; ``registered()`` (``python -m madopd_envs list``) imports
all. Entry points seen twice are loaded once; registering the same definition again is a no-op; a
plugin that fails (import error, an id registered by someone else, an id in ``madopd/``) is undone
and recorded as one line (:func:`plugin_errors`) while every other env keeps working.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib
import importlib.metadata
import re
import traceback
from dataclasses import dataclass
from typing import Any, Callable

import gymnasium

from madopd_envs.builtin import register_all as register_builtin
from madopd_envs.card import EnvCard
from madopd_envs.core import TextEnv

ID_PATTERN = re.compile(r"^(?P<namespace>[A-Za-z0-9][A-Za-z0-9_.-]*)/[A-Za-z0-9][A-Za-z0-9_.+-]*-v\d+$")
BUILTIN_NAMESPACE = "madopd"
ENTRY_POINT_GROUP = "madopd.envs"
BUILTIN = "built-in"
USER = "user code"


@dataclass(frozen=True)
class EnvSpec:
    """A registered env. ``source`` says who registered it: ``built-in``, ``plugin <name>`` or ``user code``."""

    id: str
    entry_point: str | Callable[..., TextEnv]
    kwargs: dict[str, Any]
    max_episode_steps: int | None
    card: EnvCard
    source: str = USER
    distribution: tuple[str, str] | None = None  # (package, version) when the loader knows it

    @property
    def package(self) -> str:
        return self._dist()[0]

    @property
    def version(self) -> str:
        return self._dist()[1]

    def _dist(self) -> tuple[str, str]:
        if self.distribution is not None:
            return self.distribution
        ep = self.entry_point
        module = ep.partition(":")[0] if isinstance(ep, str) else getattr(ep, "__module__", "")
        return distribution_of(module)

    def same_definition(self, other: EnvSpec) -> bool:
        return (self.entry_point == other.entry_point and self.kwargs == other.kwargs
                and self.max_episode_steps == other.max_episode_steps and self.card == other.card)

    def describe(self) -> dict[str, Any]:
        """The card as results record it (``run.json``): id, card fields, package, version, source."""
        return {"id": self.id, **dataclasses.asdict(self.card), "package": self.package, "version": self.version,
                "source": self.source, "max_episode_steps": self.max_episode_steps}


class UnknownEnvError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; users should read plain words
        return str(self.args[0])


class MissingEngineError(ImportError):
    pass


class DuplicateEnvError(ValueError):
    """An id registered twice with different definitions by different sources."""


class PluginError(UnknownEnvError):
    """The module of a ``"module:<id>"`` lookup could not be imported."""


_REGISTRY: dict[str, EnvSpec] = {}
_source = USER  # who is registering right now: BUILTIN, "plugin <name>" while a plugin loads, else USER
_source_dist: tuple[str, str] | None = None


def register(
    id: str,
    entry_point: str | Callable[..., TextEnv],
    *,
    max_episode_steps: int | None = None,
    kwargs: dict[str, Any] | None = None,
    card: EnvCard | None = None,
) -> EnvSpec:
    """Register an environment under ``id`` (``<namespace>/<Name>-v<N>``; built-ins use ``madopd/``).

    Registering the same definition again is a no-op. A different definition of a registered id fails
    with :class:`DuplicateEnvError` when another source (built-in, another plugin, user code) owns it;
    the same source replaces its own (a notebook cell run twice). Plugins may not use ``madopd/``.
    """
    match = ID_PATTERN.match(id)
    if not match:
        raise ValueError(f"environment ids look like '<namespace>/<Name>-v<N>' (built-ins: 'madopd/<Name>-v<N>'); "
                         f"got {id!r}")
    _load_builtin()  # built-ins first, so a clash is reported at the register call that causes it
    namespace = match["namespace"]
    if _source.startswith("plugin ") and namespace != _source.removeprefix("plugin "):
        owner = "the built-in envs" if namespace == BUILTIN_NAMESPACE else \
            next((f"plugin {ep.name} ({ep.value})" for ep in _entry_points() if ep.name == namespace), None)
        if owner:  # a namespace is owned by the entry point of that name: loading order cannot matter
            raise DuplicateEnvError(f"{id!r}: the '{namespace}/' namespace belongs to {owner}; register your envs "
                                    f"under your own namespace ('<your_package>/{id.split('/', 1)[1]}')")
    spec = EnvSpec(id, entry_point, dict(kwargs or {}), max_episode_steps, card or EnvCard(family="text"),
                   source=_source, distribution=_source_dist)
    old = _REGISTRY.get(id)
    if old is not None and old.same_definition(spec):
        return old
    if old is not None and old.source != spec.source:
        raise DuplicateEnvError(f"{id!r} is already registered by {old.source} ({old.entry_point!r}); "
                                f"register under your own namespace or a new version (-v<N+1>)")
    _REGISTRY[id] = spec
    gymnasium.envs.registration.registry.pop(id, None)  # a replacement is deliberate: no override warning
    # gymnasium.make goes through our make so the engine check and max_episode_steps apply; the limit is
    # also given to gymnasium so that `env.spec.max_episode_steps` reports it (its TimeLimit agrees with ours).
    gymnasium.register(id, entry_point=_gymnasium_entry_point(id), max_episode_steps=max_episode_steps,
                       disable_env_checker=True)
    return spec


def _gymnasium_entry_point(env_id: str) -> Callable[..., TextEnv]:
    def make_registered(**kwargs: Any) -> TextEnv:
        return make(env_id, **kwargs)

    return make_registered


def spec(id: str) -> EnvSpec:
    """The spec of ``id`` or ``"module:<id>"``; an unknown id fails with the closest registered ids.

    A miss loads the ``madopd.envs`` plugins named after the id's namespace, then the others.
    """
    _load_builtin()
    module, colon, bare = id.partition(":")
    if colon:  # Gymnasium's form: import the module (its import registers), then look the id up
        # a module of a package with an entry point loads under that entry point's name (its namespace)
        eps = _entry_points()
        ep = next((e for e in eps if e.module == module), None) or \
            next((e for e in eps if e.module.split(".")[0] == module.split(".")[0]), None)
        error = _load_plugin(ep.name, module, _ep_dist(ep)) if ep else _load_plugin(module, module,
                                                                                    distribution_of(module))
        if error:
            raise PluginError(f"{id!r}: importing {module!r} failed: {error}")
        id = bare
    if id not in _REGISTRY:
        _load_entry_points(namespace=id.partition("/")[0])
    if id not in _REGISTRY:
        _load_entry_points()
    if id in _REGISTRY:
        return _REGISTRY[id]
    close = difflib.get_close_matches(id, list(_REGISTRY), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    broken = "".join(f" Plugin {name} failed to load: {err}." for name, err in plugin_errors().items())
    raise UnknownEnvError(f"No environment {id!r} is registered.{hint}{broken} `python -m madopd_envs list` shows "
                          f"them all; a plugin's module can be named in the id: 'my_module:{id}'.")


def registered() -> list[EnvSpec]:
    """Every env: built-ins and every ``madopd.envs`` plugin that loads (see :func:`plugin_errors`)."""
    _load_builtin()
    _load_entry_points()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def make(id: str, **kwargs: Any) -> TextEnv:
    """Build the environment ``id``; keyword arguments override the registered ones."""
    s = spec(id)
    missing = s.card.missing_modules()
    if missing:
        setup = " (or `make setup`, which installs every engine)" if s.source == BUILTIN else ""
        raise MissingEngineError(
            f"{s.id} needs {', '.join(missing)}, which is not installed. Install it with: {s.card.install_hint()}{setup}."
        )
    cls = _resolve(s.entry_point)
    merged = {**s.kwargs, **kwargs}
    if s.max_episode_steps is not None:
        merged.setdefault("max_episode_steps", s.max_episode_steps)
    env = cls(**merged)
    env.spec = gymnasium.envs.registration.EnvSpec(id=s.id, entry_point=_gymnasium_entry_point(id), kwargs=merged,
                                                   max_episode_steps=merged.get("max_episode_steps"),
                                                   disable_env_checker=True)
    return env


def _resolve(entry_point: str | Callable[..., TextEnv]) -> Callable[..., TextEnv]:
    if callable(entry_point):
        return entry_point
    module, _, attr = entry_point.partition(":")
    return getattr(importlib.import_module(module), attr)


_builtin_loaded = False


def _load_builtin() -> None:
    """Run the built-in families' ``register`` lines (cheap: no engine is imported)."""
    global _builtin_loaded, _source, _source_dist
    if not _builtin_loaded:
        _builtin_loaded = True
        saved = _source, _source_dist
        _source, _source_dist = BUILTIN, None
        try:
            register_builtin(register)
        finally:
            _source, _source_dist = saved


# -- plugins ---------------------------------------------------------------------------------------
_PLUGINS: dict[str, str | None] = {}  # module -> None (loaded) or the one-line error
_PLUGIN_ERRORS: dict[str, str] = {}  # "<name> (<package> <version>)" -> "<module>: <error>"


def plugin_errors() -> dict[str, str]:
    """Plugins that failed to load so far: ``"<name> (<package> <version>)"`` -> one-line reason."""
    return dict(_PLUGIN_ERRORS)


@functools.cache
def _distributions() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


@functools.cache
def distribution_of(module: str) -> tuple[str, str]:
    """``(package, version)`` of the installed distribution that provides ``module`` (``("", "")`` if none)."""
    for name in _distributions().get(module.split(".")[0], []):
        try:
            return name, importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "", ""


def _entry_points() -> list[importlib.metadata.EntryPoint]:
    """The ``madopd.envs`` entry points, each (name, module) once, in a fixed order."""
    seen: dict[tuple[str, str], importlib.metadata.EntryPoint] = {}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        seen.setdefault((ep.name, ep.value), ep)  # a package on sys.path twice lists its entry points twice
    return [seen[k] for k in sorted(seen)]


def _load_entry_points(namespace: str | None = None) -> None:
    for ep in _entry_points():
        if namespace is None or ep.name == namespace:
            _load_plugin(ep.name, ep.module, _ep_dist(ep))


def _ep_dist(ep: importlib.metadata.EntryPoint) -> tuple[str, str]:
    return (ep.dist.name, ep.dist.version) if ep.dist is not None else distribution_of(ep.module)


def _load_plugin(name: str, module: str, dist: tuple[str, str]) -> str | None:
    """Import a plugin module once; on failure undo what it registered and keep the error. Returns the error."""
    global _source, _source_dist
    if module in _PLUGINS:
        return _PLUGINS[module]
    _PLUGINS[module] = None  # a plugin importing itself (or another plugin importing it) does not recurse
    before = set(_REGISTRY)
    saved = _source, _source_dist
    _source, _source_dist = f"plugin {name}", dist
    error = None
    try:
        importlib.import_module(module)
    except Exception as e:  # any failure of a third-party import is reported, never raised at others
        error = _one_line(e)
        for env_id in set(_REGISTRY) - before:
            del _REGISTRY[env_id]
            gymnasium.envs.registration.registry.pop(env_id, None)
    finally:
        _source, _source_dist = saved
    _PLUGINS[module] = error
    if error:
        label = f"{name} ({' '.join(p for p in dist if p) or 'no package'})"
        _PLUGIN_ERRORS[label] = f"{module}: {error}"
    return error


def _one_line(e: BaseException) -> str:
    """``Type: message (at file:line)`` of the innermost frame outside the registry and importlib, on one line."""
    tb = [f for f in traceback.extract_tb(e.__traceback__) if f.filename != __file__ and "importlib" not in f.filename]
    where = f" (at {tb[-1].filename}:{tb[-1].lineno})" if tb else ""
    message = " ".join(str(e).split())
    return f"{type(e).__name__}: {message}{where}" if message else f"{type(e).__name__}{where}"


# `import gymnasium, madopd_envs; gymnasium.make("madopd/...")` must work with no registry call first: the
# built-ins register here (cheap: no engine and no plugin is imported).
_load_builtin()
