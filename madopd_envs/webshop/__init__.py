"""WebShop, offline: upstream's text-mode shopping site with bm25s search and its exact reward.

``madopd/WebShop-v0`` plays a deterministic bundled catalogue (``catalogue.py``) by default, or the
official WebShop files from a user path (``data.load_official``). Pages, actions, observations and
the reward follow princeton-nlp/WebShop (``web_agent_site``); see ``engine.py`` and ``reward.py``.
Importing this package is cheap; the catalogue and search index are built on first use.
"""

from madopd_envs.webshop.data import Catalogue, Goal, Product

__all__ = ["Catalogue", "Goal", "Product"]
