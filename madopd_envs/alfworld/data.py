"""Where ALFWorld games come from: upstream's data when given, else games generated offline.

- ``OfficialData``: a directory in upstream's layout (``json_2.1.1/{train,valid_seen,valid_unseen}/
  <task>/<trial>/{game.tw-pddl,traj_data.json}``), read the way ``AlfredTWEnv.collect_game_files``
  reads it: directories naming ``movable`` or ``Sliced`` are skipped, only the six task types, only
  games marked ``solvable``. With upstream's release this gives its 3553 / 140 / 134 games.
- ``GeneratedData``: the offline default. The eval splits (140 valid_seen-style and 134
  valid_unseen-style games, upstream's task-type mixes) ship in the package as gzipped JSON lines
  written by ``generate.py``; train games (``num_train`` of them, 1000 by default) are generated the
  first time they are played and cached in upstream's layout under ``$MADOPD_CACHE/alfworld`` (default
  ``~/.cache/madopd/alfworld``); ``python -m madopd_envs.alfworld.generate --out <cache root>`` fills
  the cache ahead of time in parallel.

Task ids are game directories relative to the ``json_2.1.1`` root, e.g.
``valid_unseen/pick_and_place_simple-SaltShaker-None-Cabinet-10/trial_G0_00001``; a generated game has
the same id in the bundle, in the cache and in a directory written with ``generate --out``.
"""

from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path
from typing import Any

from madopd_envs.alfworld import scenes

BUNDLE_DIR = Path(__file__).parent / "data"
DEFAULT_SEED = 0
DEFAULT_NUM_TRAIN = 1000
SPLIT_SIZES = {"valid_seen": 140, "valid_unseen": 134}
_UPSTREAM_DEFAULT_DATA = os.path.expanduser("~/.cache/alfworld")  # alfworld.info sets ALFWORLD_DATA to it


class DataError(RuntimeError):
    pass


def json_root(path: str | os.PathLike[str]) -> Path:
    """The ``json_2.1.1`` directory of a data root (the root itself when it is one)."""
    root = Path(path).expanduser()
    for candidate in (root / "json_2.1.1", root):
        if any((candidate / s).is_dir() for s in scenes.SPLITS):
            return candidate
    raise DataError(f"ALFWorld data not found in {root}: expected {root}/json_2.1.1/<split>/... with split in "
                    f"{', '.join(scenes.SPLITS)} (upstream's layout; `python -m madopd_envs.alfworld.generate --out "
                    f"{root}` writes one)")


def configured_data_path(data_path: str | os.PathLike[str] | None) -> Path | None:
    """The official data to use: ``data_path``, else ``$ALFWORLD_DATA``; ``None`` for generated games.

    Importing alfworld sets ``ALFWORLD_DATA`` to ``~/.cache/alfworld`` when it is unset, so that
    value without data in it means "not configured" rather than an error.
    """
    if data_path is not None:
        return Path(data_path)
    env = os.environ.get("ALFWORLD_DATA")
    if not env:
        return None
    if os.path.normpath(os.path.expanduser(env)) == os.path.normpath(_UPSTREAM_DEFAULT_DATA):
        try:
            json_root(env)
        except DataError:
            return None
    return Path(env)


class OfficialData:
    """Games in upstream's layout, selected as upstream's ``AlfredTWEnv`` selects them."""

    def __init__(self, path: str | os.PathLike[str]):
        self.root = json_root(path)
        self._ids: dict[str, list[str]] = {}
        self.skipped: dict[str, dict[str, int]] = {}  # split -> reason -> games left out (said in eval notes)
        self._lock = threading.Lock()

    def describe(self) -> str:
        return f"official layout at {self.root}"

    def tasks(self, split: str) -> list[str]:
        with self._lock:
            if split not in self._ids:
                self._ids[split] = self._collect(split)
            return list(self._ids[split])

    def _collect(self, split: str) -> list[str]:
        ids = []
        skipped = self.skipped[split] = {}

        def skip(reason: str) -> None:
            skipped[reason] = skipped.get(reason, 0) + 1

        for traj_path in sorted((self.root / split).rglob("traj_data.json")):
            game_dir = traj_path.parent
            rel = game_dir.relative_to(self.root).as_posix()
            if "movable" in rel or "Sliced" in rel:
                skip("'movable'/'Sliced' in the path")
                continue
            game_path = game_dir / "game.tw-pddl"
            if not game_path.exists():
                skip("no game.tw-pddl")
                continue
            if json.loads(traj_path.read_text()).get("task_type") not in scenes.TASK_TYPES:
                skip("task_type not one of the six")
                continue
            if json.loads(game_path.read_text()).get("solvable") is not True:  # upstream skips missing/False
                skip('no "solvable": true')
                continue
            ids.append(rel)
        return ids

    def load(self, task_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
        game_dir = self.root / task_id
        if not (game_dir / "game.tw-pddl").is_file() or not (game_dir / "traj_data.json").is_file():
            raise DataError(f"no ALFWorld game {task_id!r} under {self.root}")
        return (json.loads((game_dir / "game.tw-pddl").read_text()),
                json.loads((game_dir / "traj_data.json").read_text()))


_ID_RE = re.compile(r"^(?P<split>[a-z_]+)/(?P<dir>[^/]+)/trial_G(?P<seed>\d+)_(?P<index>\d+)$")


class GeneratedData:
    """Games made by ``generate.py``: shipped eval sets, train games generated on first use.

    Args:
        seed: generation seed; the shipped sets are seed 0 (other seeds generate on demand).
        num_train: train games listed by ``tasks("train")``.
        cache_dir: where games generated on demand go (default ``generate.cache_root()``).
    """

    def __init__(self, seed: int = DEFAULT_SEED, num_train: int = DEFAULT_NUM_TRAIN, cache_dir: Path | None = None):
        from madopd_envs.alfworld.generate import generated_cache

        if num_train < 1:
            raise ValueError(f"num_train must be >= 1, got {num_train}")
        self.seed, self.num_train = int(seed), int(num_train)
        self.cache = generated_cache(self.seed, cache_dir)
        self._ids: dict[str, list[str]] = {}
        self._bundle: dict[str, dict[str, Any]] = {}
        self._bundle_read: set[str] = set()

    def describe(self) -> str:
        return f"generated (seed {self.seed}; cache {self.cache})"

    def size(self, split: str) -> int:
        return self.num_train if split == "train" else SPLIT_SIZES[split]

    def tasks(self, split: str) -> list[str]:
        if split not in self._ids:
            self._ids[split] = sorted(scenes.game_id(split, i, self.seed) for i in range(self.size(split)))
        return list(self._ids[split])

    def _bundled(self, split: str) -> dict[str, dict[str, Any]]:
        if split not in self._bundle_read:
            self._bundle_read.add(split)
            path = BUNDLE_DIR / f"{split}.jsonl.gz"
            if self.seed == DEFAULT_SEED and path.exists():
                from madopd_envs.alfworld.generate import read_bundle

                self._bundle.update({r["id"]: r for r in read_bundle(path)})
        return self._bundle

    def load(self, task_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
        from madopd_envs.alfworld.engine import game_data
        from madopd_envs.alfworld.generate import make_game, read_official, write_official

        m = _ID_RE.match(task_id)
        if not m or m["split"] not in scenes.SPLITS or int(m["seed"]) != self.seed \
                or scenes.game_id(m["split"], int(m["index"]), self.seed) != task_id:
            raise DataError(f"{task_id!r} is not a generated ALFWorld game of seed {self.seed} "
                            f"(ids look like {self.tasks('valid_unseen')[0]!r})")
        record = self._bundled(m["split"]).get(task_id)
        if record is None:
            if (self.cache / task_id / "game.tw-pddl").exists():
                return read_official(self.cache / task_id)
            record = make_game(m["split"], int(m["index"]), self.seed)  # seconds: scene draws + expert check
            write_official(record, self.cache)
        doc = game_data(record["pddl_problem"], record["task_desc"], walkthrough=record["walkthrough"])
        return doc, record["traj_data"]
