"""``madopd/WebShop-v0``: the WebShop text env on the bundled catalogue or the official data.

Task ids are goal indices in upstream's shuffled goal list (``"0"`` ... ``"2999"`` bundled); splits
follow upstream: test = goals 0-499, valid (upstream's "eval") = 500-1499, train = 1500+. The
reward comes only with ``click[Buy Now]``: ``score`` = reward in [0, 1], ``raw_score`` = reward x 100,
``won`` = reward == 1. ``admissible_actions`` lists ``search[<your query>]`` where a search bar is and
``click[...]`` for every clickable (lower-cased, as upstream). With ``expert=True``,
``expert_action`` is the goal-reading oracle's next action, or with ``expert_policy="shopper"``
the page-reading shopper's (``oracle.py``).

Catalogue and search index are built once per process and data source and shared by every env in
it; an official catalogue's index is cached on disk (``index_cache``), since indexing 1.18M
products takes minutes.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path
from typing import Any, ClassVar

from madopd_envs.core import TextEnv
from madopd_envs.webshop.data import Catalogue, load_official
from madopd_envs.webshop.engine import ShopEngine
from madopd_envs.webshop.oracle import expert_action, shopper_action
from madopd_envs.webshop.search import SearchIndex, corpus_key


# What ``expert_action`` plays: the goal-reading oracle, or the shopper that reads only the pages
# (oracle.py), which a teacher trained on transcripts can learn.
EXPERT_POLICIES = {"oracle": expert_action, "shopper": shopper_action}


def default_index_cache() -> Path:
    """``$MADOPD_CACHE/webshop-index`` (default ``~/.cache/madopd/webshop-index``), read at call time."""
    return Path(os.environ.get("MADOPD_CACHE") or Path.home() / ".cache" / "madopd") / "webshop-index"


_SHOPS: dict[tuple, tuple[Catalogue, SearchIndex]] = {}
_SHOPS_LOCK = threading.Lock()


def load_shop(data_dir: str | None = None, *, variant: str = "auto", num_products: int | None = None,
              human_goals: bool = True, seed: int = 0,
              index_cache: str | Path | bool | None = None) -> tuple[Catalogue, SearchIndex]:
    """The catalogue and its index for a data source (memoised per process)."""
    data_key = str(Path(data_dir).expanduser().resolve()) if data_dir else None
    key = (data_key, variant, num_products, human_goals, seed)
    with _SHOPS_LOCK:
        if key not in _SHOPS:
            if data_dir is None:
                from madopd_envs.webshop.catalogue import bundled_catalogue

                catalogue = bundled_catalogue(seed, human_goals)
                index = SearchIndex.build(catalogue.products)  # ~0.3 s for 1500 products: not worth a cache
            else:
                catalogue = load_official(data_dir, variant=variant, num_products=num_products,
                                          human_goals=human_goals)
                index = _cached_index(catalogue, index_cache)
            _SHOPS[key] = (catalogue, index)
        return _SHOPS[key]


def _cached_index(catalogue: Catalogue, cache: str | Path | bool | None) -> SearchIndex:
    """The index of an official catalogue, loaded from ``cache`` when a matching one was saved there."""
    if cache is False:
        return SearchIndex.build(catalogue.products)
    root = default_index_cache() if cache is None or cache is True else Path(cache)
    path = root / corpus_key(catalogue.products)
    if (path / "asins.json").is_file():
        return SearchIndex.load(path)
    index = SearchIndex.build(catalogue.products)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    index.save(tmp)
    try:
        tmp.rename(path)  # atomic: concurrent workers never read a half-written index
    except OSError:  # another process won the race; its index is identical
        shutil.rmtree(tmp, ignore_errors=True)
    return index


class WebShopEnv(TextEnv):
    """WebShop in text mode.

    Args:
        data_dir: folder with the official files (``items_shuffle*.json``, ``items_ins_v2*.json``,
            ``items_human_ins.json``); ``None`` plays the bundled catalogue.
        variant: which official files: ``"auto"``, ``"all"`` or ``"1000"`` (see ``data.find_official_files``).
        num_products: keep the first N products of the official file (upstream's ``num_products``).
        human_goals: crowd-sourced instructions (upstream's text-env default) or synthetic ones.
        seed: the bundled catalogue's generator seed.
        show_attrs: add upstream's hidden ``Attributes`` sub page to item pages.
        search_anywhere: accept ``search[...]`` on every page, as upstream's text env does (default);
            ``False`` only where a search bar is shown. Either way ``admissible_actions`` lists it only there.
        index_cache: where an official catalogue's bm25s index is cached: a folder, ``None`` for
            ``$MADOPD_CACHE/webshop-index``, or ``False`` to rebuild it every time.
        expert_policy: what ``expert_action`` (``expert=True``) plays: ``"oracle"`` (knows the target) or
            ``"shopper"`` (reads only the pages).
    """

    family: ClassVar[str] = "webshop"
    splits: ClassVar[tuple[str, ...]] = ("train", "valid", "test")

    def __init__(self, data_dir: str | None = None, *, variant: str = "auto", num_products: int | None = None,
                 human_goals: bool = True, seed: int = 0, show_attrs: bool = False, search_anywhere: bool = True,
                 index_cache: str | Path | bool | None = None, expert_policy: str = "oracle", **kwargs: Any):
        super().__init__(**kwargs)
        if expert_policy not in EXPERT_POLICIES:
            raise ValueError(f"WebShop expert_policy must be one of {', '.join(EXPERT_POLICIES)}; got {expert_policy!r}")
        self.expert_policy = EXPERT_POLICIES[expert_policy]
        self.catalogue, index = load_shop(data_dir, variant=variant, num_products=num_products,
                                          human_goals=human_goals, seed=seed, index_cache=index_cache)
        self.engine = ShopEngine(self.catalogue, index, show_attrs=show_attrs, search_anywhere=search_anywhere)

    def tasks(self, split: str | None = None) -> list[str]:
        return [str(i) for i in self.catalogue.split_indices(split or self.split)]

    def _load(self, task_id: str, split: str) -> tuple[str, dict[str, Any]]:
        try:
            index = int(task_id)
            goal_split = self.catalogue.split_of(index)
        except (ValueError, IndexError):
            raise ValueError(f"WebShop task ids are goal indices 0..{len(self.catalogue.goals) - 1}; "
                             f"got {task_id!r}") from None
        if goal_split != split:
            raise ValueError(f"WebShop goal {index} belongs to split {goal_split!r}, not {split!r}; "
                             f"pass options={{'task_id': '{index}', 'split': '{goal_split}'}}")
        self.engine.start(self.catalogue.goals[index])
        return self.engine.observation(), self._info()

    def _act(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        outcome = self.engine.act(action)
        obs = self.engine.observation()
        if not outcome.valid:
            obs = f"Invalid action: {outcome.message}\n\n{obs}"
        info = self._info()
        info["action_valid"] = outcome.valid
        return obs, outcome.reward, outcome.done, info

    def _info(self) -> dict[str, Any]:
        s = self.engine.s
        reward = s.reward.reward if s.reward else 0.0
        info: dict[str, Any] = {
            "task": s.goal.instruction_text,
            "admissible_actions": self.engine.available_actions(),
            "won": reward == 1.0,
            "score": reward,
            "raw_score": reward * 100.0,
            "expert_action": self.expert_policy(self.engine) if self.expert else None,
        }
        if s.reward is not None:
            info["reward_info"] = {**s.reward.as_dict(), "asin": s.asin, "options": dict(s.options),
                                   "target_asin": s.goal.asin}
        return info
