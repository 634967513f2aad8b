"""The shopping site's page states, transitions and text rendering (upstream's text mode).

Upstream renders HTML (web_agent_site/templates) and its text env flattens the visible text with
`` [SEP] `` (``observation_mode="text"``); clickables are the page's buttons, product links and
option radios, lower-cased. This engine produces the same strings without HTML:

    search   WebShop [SEP] Instruction: [SEP] <goal> [SEP] Search
    results  Instruction: [SEP] <goal> [SEP] Back to Search [SEP] Page 2 (Total results: 50) [SEP]
             < Prev [SEP] Next > [SEP] <ASIN> [SEP] <title> [SEP] <price> ...   (10 per page)
    item     ... [SEP] Back to Search [SEP] < Prev [SEP] <option name> [SEP] <value> ... [SEP] <title>
             [SEP] Price: <price> [SEP] Rating: <rating> [SEP] Description [SEP] Features [SEP]
             Reviews [SEP] Buy Now
    sub page ... [SEP] Back to Search [SEP] < Prev [SEP] <description | bullet points | reviews>
    done     Thank you for shopping with us! [SEP] Your score (min 0.0, max 1.0) [SEP] <reward>

As upstream: ``Next >`` is always offered on results pages (past the last page it shows none);
``< Prev`` goes results -> previous page, item -> its results page, sub page -> item; a new search or
returning to results clears the chosen options; ``click[Buy Now]`` ends the episode with the reward.
Differences, on purpose: an action that upstream silently ignores is answered in words (and
flagged invalid); ``Search[...]``/``CLICK[...]``
and surrounding spaces are accepted (upstream needs lower-case names); the done page shows the
score without upstream's hidden MTurk fields.

As upstream's text env, ``search[...]`` works from every page (``search_anywhere=True``, the default),
while the admissible actions list it only where the page shows a search bar (upstream's
``has_search_bar``); ``search_anywhere=False`` refuses it elsewhere, as the rendered site would.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum

from madopd_envs.webshop.data import Catalogue, Goal, Product
from madopd_envs.webshop.reward import Reward, get_reward
from madopd_envs.webshop.search import SearchIndex

PRODUCT_WINDOW = 10  # results per page, upstream engine.py
SEP = " [SEP] "
BUY_NOW, NEXT_PAGE, PREV_PAGE, BACK_TO_SEARCH = "Buy Now", "Next >", "< Prev", "Back to Search"
SUB_PAGES = ("Description", "Features", "Reviews", "Attributes")
SEARCH_TEMPLATE = "search[<your query>]"  # what admissible_actions lists where a search bar is
_ACTION = re.compile(r"^\s*(search|click)\s*\[(.*)\]\s*$", re.IGNORECASE | re.DOTALL)


class Page(str, Enum):
    SEARCH = "search"
    RESULTS = "results"
    ITEM = "item"
    SUB = "item_sub_page"
    DONE = "done"


@dataclass
class Session:
    """One shopper's state: the page and what led to it (upstream's ``user_sessions[id]``)."""

    goal: Goal
    page: Page = Page.SEARCH
    keywords: str = ""
    results: list[str] = field(default_factory=list)  # asins of the current search, best first
    page_num: int = 1
    asin: str | None = None
    options: dict[str, str] = field(default_factory=dict)  # option name -> chosen value
    sub_page: str | None = None
    searches: int = 0  # searches issued this episode (the oracle plans with it)
    visited: list[str] = field(default_factory=list)  # item pages opened this episode (the shopper skips them)
    reward: Reward | None = None


@dataclass(frozen=True)
class Outcome:
    """What one action did: ``valid`` is False when nothing happened (``message`` says why)."""

    valid: bool
    message: str = ""
    reward: float = 0.0
    done: bool = False


class ShopEngine:
    """The site for one shopper at a time. ``start(goal)``, then ``act(action)`` and ``observation()``."""

    def __init__(self, catalogue: Catalogue, index: SearchIndex, *, show_attrs: bool = False,
                 search_anywhere: bool = True):
        self.catalogue = catalogue
        self.index = index
        self.show_attrs = show_attrs
        self.search_anywhere = search_anywhere
        self.session: Session | None = None

    # -- state ------------------------------------------------------------------------------------
    def start(self, goal: Goal) -> None:
        self.session = Session(goal=goal)

    @property
    def s(self) -> Session:
        if self.session is None:
            raise RuntimeError("ShopEngine.start(goal) must come first")
        return self.session

    @property
    def product(self) -> Product | None:
        return self.catalogue.by_asin.get(self.s.asin) if self.s.asin else None

    def page_products(self) -> list[Product]:
        s = self.s
        window = s.results[(s.page_num - 1) * PRODUCT_WINDOW: s.page_num * PRODUCT_WINDOW]
        return [self.catalogue.by_asin[a] for a in window]

    # -- what can be clicked (upstream get_available_actions: text -> clickable) --------------------
    def clickables(self) -> dict[str, tuple[str, str]]:
        """Lower-cased clickable text -> (kind, value); kinds: button, product, option."""
        s, out = self.s, {}

        def buttons(*names: str) -> None:
            out.update({n.lower(): ("button", n) for n in names})

        if s.page is Page.SEARCH:
            buttons("Search")
        elif s.page is Page.RESULTS:
            buttons(BACK_TO_SEARCH, *((PREV_PAGE,) if s.page_num > 1 else ()), NEXT_PAGE)
            out.update({p.asin.lower(): ("product", p.asin) for p in self.page_products()})
        elif s.page is Page.ITEM:
            subs = SUB_PAGES if self.show_attrs else SUB_PAGES[:3]
            buttons(BACK_TO_SEARCH, PREV_PAGE, *subs, BUY_NOW)
            for name, values in self.product.options.items():
                out.update({v: ("option", name) for v in values})  # a value shared by two options: last wins
        elif s.page is Page.SUB:
            buttons(BACK_TO_SEARCH, PREV_PAGE)
        return out

    def has_search_bar(self) -> bool:
        return self.s.page is Page.SEARCH

    def available_actions(self) -> list[str]:
        """Admissible actions: the search template where there is a search bar, then ``click[...]``
        (as upstream's ``get_available_actions``: search is listed only there, even where it works)."""
        actions = [SEARCH_TEMPLATE] if self.has_search_bar() else []
        return actions + [f"click[{c}]" for c in self.clickables() if c != "search"]

    # -- transitions --------------------------------------------------------------------------------
    def act(self, action: str) -> Outcome:
        s = self.s
        if s.page is Page.DONE:
            return Outcome(False, "The episode is over: the purchase was made. Call reset() to shop again.")
        m = _ACTION.match(action)
        if m is None:
            return Outcome(False, f"Actions look like search[keywords] or click[button]; got {_quote(action)}.")
        name, arg = m.group(1).lower(), m.group(2).strip().lower()
        if name == "search":
            if not (self.has_search_bar() or self.search_anywhere):
                return Outcome(False, "There is no search bar on this page; click[Back to Search] first.")
            if not arg:
                return Outcome(False, "search[...] needs keywords.")
            self._search(arg, 1)
            s.searches += 1
            return Outcome(True)
        clickables = self.clickables()
        if arg == "search":
            return Outcome(False, "Type a query with search[keywords] instead of clicking Search.")
        if arg not in clickables:
            shown = ", ".join(c for c in clickables if c != "search")
            if not shown:
                return Outcome(False, f"{_quote(arg)} is not clickable: this page has only the search bar; "
                                      "use search[keywords].")
            return Outcome(False, f"{_quote(arg)} is not clickable on this page. Clickable: {shown}.")
        kind, value = clickables[arg]
        if kind == "product":
            s.asin, s.page = value, Page.ITEM
            s.visited.append(value)
        elif kind == "option":
            s.options[value] = arg
            s.page = Page.ITEM
        elif value == BUY_NOW:
            return self._buy()
        elif value == BACK_TO_SEARCH:
            self.session = Session(goal=s.goal, searches=s.searches, visited=s.visited)
        elif value == NEXT_PAGE:
            self._search(s.keywords, s.page_num + 1)
        elif value == PREV_PAGE:
            if s.page is Page.RESULTS:
                self._search(s.keywords, s.page_num - 1)
            elif s.page is Page.ITEM:
                self._search(s.keywords, s.page_num)
            else:
                s.page, s.sub_page = Page.ITEM, None
        else:  # Description / Features / Reviews / Attributes
            s.page, s.sub_page = Page.SUB, value
        return Outcome(True)

    def _search(self, keywords: str, page_num: int) -> None:
        s = self.s
        if keywords != s.keywords or not s.results:
            s.results = self.index.search(keywords)
        s.keywords, s.page_num, s.page = keywords, page_num, Page.RESULTS
        s.asin, s.options, s.sub_page = None, {}, None  # upstream's search_results resets both

    def _buy(self) -> Outcome:
        s, product = self.s, self.product
        s.reward = get_reward(product, s.goal, self.catalogue.prices[product.asin], s.options)
        s.page = Page.DONE
        return Outcome(True, reward=s.reward.reward, done=True)

    # -- rendering ----------------------------------------------------------------------------------
    def observation(self) -> str:
        s = self.s
        head = ["Instruction:", s.goal.instruction_text]
        if s.page is Page.SEARCH:
            parts = ["WebShop", *head, "Search"]
        elif s.page is Page.RESULTS:
            parts = [*head, BACK_TO_SEARCH, f"Page {s.page_num} (Total results: {len(s.results)})"]
            parts += [PREV_PAGE] if s.page_num > 1 else []
            parts.append(NEXT_PAGE)
            for p in self.page_products():
                parts += [p.asin, p.title, p.price_tag]
        elif s.page is Page.ITEM:
            p = self.product
            parts = [*head, BACK_TO_SEARCH, PREV_PAGE]
            for name, values in p.options.items():
                parts += [name, *values]
            parts += [p.title, f"Price: {p.price_tag}", f"Rating: {p.rating}", *SUB_PAGES[:3]]
            parts += [SUB_PAGES[3]] if self.show_attrs else []
            parts.append(BUY_NOW)
        elif s.page is Page.SUB:
            parts = [*head, BACK_TO_SEARCH, PREV_PAGE, *self._sub_page_text()]
        else:
            parts = ["Thank you for shopping with us!", "Your score (min 0.0, max 1.0)", str(s.reward.reward)]
        return SEP.join(t for t in (str(x).strip() for x in parts) if t)

    def _sub_page_text(self) -> list[str]:
        p, sub = self.product, self.s.sub_page
        if sub == "Description":
            return [p.description]
        if sub == "Features":
            return list(p.bullet_points)
        if sub == "Reviews":
            return [x for r in p.reviews for x in (f'"{r.get("title", "")}"', str(r.get("score", "")), r.get("body", ""))]
        return [*p.attributes, p.category, p.query, p.product_category]


def _quote(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= limit else text[:limit] + "...")
