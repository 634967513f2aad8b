"""Config roots and YAML loading, shared by the eval (leaderboards) and the agent registry (agent cards).

Both layers read ``<root>/<group>/<name>.yaml``; this module imports neither of them, so the agent
layer can load its cards without importing the eval, and the eval reaches agents only lazily.
Config roots are searched in order: ``$MADOPD_CONF`` (``:``-separated), ``./leaderboards/conf``, and
the ``leaderboards/conf`` of this checkout.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

REPO_CONF = Path(__file__).resolve().parents[1] / "leaderboards" / "conf"


class ConfigError(ValueError):
    """A config that cannot be used; the message names the file and the fix."""


def conf_dirs() -> list[Path]:
    """Config roots, most specific first (each may hold ``agent/`` and ``leaderboard/``)."""
    roots = [Path(p) for p in os.environ.get("MADOPD_CONF", "").split(":") if p]
    roots += [Path.cwd() / "leaderboards" / "conf", REPO_CONF]
    seen, out = set(), []
    for r in roots:
        key = r.resolve()
        if key not in seen and r.is_dir():
            seen.add(key)
            out.append(r)
    return out


def find_config(group: str, name: str) -> Path:
    """``<root>/<group>/<name>.yaml`` in the first root that has it."""
    for root in conf_dirs():
        path = root / group / f"{name}.yaml"
        if path.is_file():
            return path
    known = sorted(list_configs(group))
    raise ConfigError(f"no {group} config named {name!r}; known: {', '.join(known) or '(none)'} "
                      f"(searched {', '.join(str(r / group) for r in conf_dirs()) or 'no config roots'})")


def list_configs(group: str) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for root in reversed(conf_dirs()):  # earlier roots override later ones
        for path in sorted((root / group).glob("*.yaml")):
            found[path.stem] = path
    return found


def load_yaml(path: Path) -> dict[str, Any]:
    from omegaconf import OmegaConf

    try:
        raw = OmegaConf.load(path)
    except Exception as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    try:
        data = OmegaConf.to_container(raw, resolve=True)
    except Exception as e:  # ${oc.env:VAR} of an unset variable, typically
        raise ConfigError(f"{path}: cannot resolve {str(e).splitlines()[0]} (set it, or use another config)") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data
