"""Scripted policies: the goal-reading oracle (the env's ``expert_action``), a random and a rule policy.

The oracle reads the goal (privileged: it knows the target asin and options) and acts from the
*current* page, so it recovers after any detour:

1. search page: first search with the instruction text (its price clause removed); if that search
   did not surface the target, search the target's title;
2. results: click the target if it is on this page; else page towards it (``Next >``/``< Prev``);
   else go back and search again (after two searches: take the first result, so episodes end);
3. item page of another product, or a sub page: ``< Prev``;
4. target's item page: click each goal option not yet chosen, then ``Buy Now``.

``shopper_action`` is a strong policy that, unlike the oracle, reads only what the pages show (the
instruction, result titles and price tags, an item's options, what it opened before), so a teacher can
learn it from transcripts (``madopd/WebShop-v0`` with ``expert_policy="shopper"``):

1. search page: search the instruction text (its price clause removed);
2. results: open the first product, in the search engine's order, not opened before whose price tag
   stays within the instruction's limit; none on this page: ``Next >`` (past the last page: the first
   result, so episodes end);
3. item page: ``< Prev`` when the instruction names one of the product's options (``size``, ``color``,
   ...) but none of its values; else click each offered value the instruction names, then ``Buy Now``;
4. a sub page: ``< Prev``.

``random_action`` is a floor: it searches the instruction (a random policy cannot write queries)
and then clicks uniformly among the admissible clicks. ``rule_action`` is upstream's rule baseline:
search the instruction, open the first result, buy.
"""

from __future__ import annotations

import random
import re

from madopd_envs.webshop.engine import BACK_TO_SEARCH, BUY_NOW, NEXT_PAGE, PREV_PAGE, PRODUCT_WINDOW, Page, ShopEngine
from madopd_envs.webshop.reward import MATCH_THRESHOLD, fuzzy, normalize_color

_PRICE_CLAUSE = re.compile(r",? and price lower than ([\d.]+) dollars\s*$")


def instruction_query(instruction: str) -> str:
    """The instruction without its price clause, lower-cased: the oracle's first query."""
    return _PRICE_CLAUSE.sub("", instruction).strip().lower()


def target_options(engine: ShopEngine) -> dict[str, str]:
    """The target's option values that best match the goal options: option name -> value."""
    goal = engine.s.goal
    product = engine.catalogue.by_asin[goal.asin]
    chosen: dict[str, tuple[tuple[bool, int], str]] = {}
    for g in goal.goal_options:
        # An exact value beats fuzzy ties ("6" and "6.5" both score 100 against "6.5").
        scored = [((v == g, fuzzy(normalize_color(v), normalize_color(g))), name, v)
                  for name, values in product.options.items() for v in values]
        if not scored:
            continue
        key, name, value = max(scored, key=lambda t: t[0])
        if key[1] > MATCH_THRESHOLD and key > chosen.get(name, ((False, -1), ""))[0]:
            chosen[name] = (key, value)
    return {name: value for name, (_, value) in chosen.items()}


def expert_action(engine: ShopEngine) -> str | None:
    """The oracle's next action from the engine's current state (``None`` once the episode is over)."""
    s = engine.s
    target = s.goal.asin
    if s.page is Page.DONE:
        return None
    if s.page is Page.SEARCH:
        if s.searches == 0:
            return f"search[{instruction_query(s.goal.instruction_text)}]"
        return f"search[{engine.catalogue.by_asin[target].title.lower()}]"
    if s.page is Page.RESULTS:
        if target in s.results:
            page_of_target = s.results.index(target) // PRODUCT_WINDOW + 1
            if page_of_target == s.page_num:
                return f"click[{target.lower()}]"
            return f"click[{NEXT_PAGE.lower() if page_of_target > s.page_num else PREV_PAGE.lower()}]"
        if s.searches < 2:
            return f"click[{BACK_TO_SEARCH.lower()}]"
        if s.results and s.page_num == 1:
            return f"click[{s.results[0].lower()}]"
        return f"click[{BACK_TO_SEARCH.lower()}]" if not s.results else f"click[{PREV_PAGE.lower()}]"
    if s.page is Page.SUB or s.asin != target:
        return f"click[{PREV_PAGE.lower()}]"
    for name, value in target_options(engine).items():
        if s.options.get(name) != value:
            return f"click[{value}]"
    return f"click[{BUY_NOW.lower()}]"


def _named(value: str, text: str) -> bool:
    return re.search(rf"\b{re.escape(value)}\b", text) is not None


def shopper_action(engine: ShopEngine) -> str | None:
    """The page-reading shopper's next action (``None`` once the episode is over); never reads the goal's
    target, options or price limit, only the instruction as the page shows it."""
    s = engine.s
    text = s.goal.instruction_text.lower()
    limit = _PRICE_CLAUSE.search(s.goal.instruction_text)  # the limit as the instruction states it
    if s.page is Page.DONE:
        return None
    if s.page is Page.SEARCH:
        return f"search[{instruction_query(s.goal.instruction_text)}]"
    if s.page is Page.SUB:
        return f"click[{PREV_PAGE.lower()}]"
    if s.page is Page.RESULTS:
        fits = [p for p in engine.page_products()  # the price tag's top (its range's high end)
                if p.asin not in s.visited and (limit is None or max(p.pricing, default=0.0) <= float(limit.group(1)))]
        if fits:
            return f"click[{fits[0].asin.lower()}]"
        if engine.page_products():
            return f"click[{NEXT_PAGE.lower()}]"
        return f"click[{s.results[0].lower()}]" if s.results else f"click[{BACK_TO_SEARCH.lower()}]"
    options = engine.product.options
    if any(_named(name.split()[0], text) and not any(_named(v, text) for v in values) for name, values in options.items()):
        return f"click[{PREV_PAGE.lower()}]"
    for name, values in options.items():
        wanted = next((v for v in values if _named(v, text)), None)
        if wanted is not None and s.options.get(name) != wanted:
            return f"click[{wanted}]"
    return f"click[{BUY_NOW.lower()}]"


def random_action(admissible: list[str], instruction: str, rng: random.Random) -> str:
    """Random policy: search the instruction where a search bar is, else a uniform admissible click."""
    clicks = [a for a in admissible if a.startswith("click[")]
    if any(a.startswith("search[") for a in admissible) and (not clicks or rng.random() < 0.5):
        return f"search[{instruction_query(instruction)}]"
    return rng.choice(clicks)


def rule_action(admissible: list[str], instruction: str) -> str:
    """Upstream's rule baseline: search the instruction, click the first result, buy."""
    if any(a.startswith("search[") for a in admissible):
        return f"search[{instruction_query(instruction)}]"
    if f"click[{BUY_NOW.lower()}]" in admissible:
        return f"click[{BUY_NOW.lower()}]"
    products = [a for a in admissible if re.fullmatch(r"click\[[a-z0-9]{10}\]", a)]
    return products[0] if products else f"click[{BACK_TO_SEARCH.lower()}]"
