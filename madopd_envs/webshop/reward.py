"""WebShop's purchase reward, with the semantics of upstream's ``goal.py::get_reward``.

    reward = r_type * (n_attr_matches + n_option_matches + [price <= limit]) / (n_attrs + n_options + 1)

- attribute: a goal attribute matches when a product attribute scores ``token_set_ratio > 85``, or
  when it is a substring of the lower-cased title, bullet points or description;
- option: each goal option matches when a chosen option scores ``> 85`` after colour normalisation
  (``navy blue`` -> ``blue``: the first colour word of upstream's list found in the string);
- price: the hidden price is at most the goal's limit;
- type: 1, but 0.5 when neither the query, nor >= 2 category levels, nor > 20% of the goal title's
  nouns match; 0.1 when under 10% of the nouns match; 0 when none do.

Fuzzy scores are thefuzz's (``full_process`` then rapidfuzz, rounded to an integer), the library
upstream calls.

**Noun extraction without spaCy.** Upstream takes the goal and product titles' NOUN/PROPN tokens
from spaCy ``en_core_web_sm``, which is not installable here. :func:`title_nouns` approximates it:
spaCy-like tokens (punctuation and hyphens split off, dotted acronyms kept whole) minus purely
numeric tokens (``2``, ``3.1``; ``4K`` and ``2pcs`` stay), closed-class words (articles,
prepositions, conjunctions, pronouns, auxiliaries), ``-ed`` participles (``Listed``, ``Padded``) and
``-ly`` adverbs. spaCy tags most capitalised title words PROPN, so adjectives are dropped only when
written in lower case (a short list plus ``-able/-ible/-ful/-less/-ous``). On upstream's own
test titles this gives title scores 0.44, 0.29, 0.15 and 0.0 where spaCy gives 0.33, 0.30, 0.15
and < 0.05 -- the same type factor in every case (tests/envs/test_webshop_reward.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable

from rapidfuzz import fuzz, utils

if TYPE_CHECKING:
    from madopd_envs.webshop.data import Goal, Product

MATCH_THRESHOLD = 85

# Upstream normalize.py's colour words, in its order: the first one found inside a string wins.
COLOR_SET = (
    "alabaster apricot aqua ash asphalt azure banana beige black blue blush bordeaux bronze brown burgundy "
    "camel camo caramel champagne charcoal cheetah chestnut chocolate christmas coffee cognac copper coral "
    "cranberry cream crystal dark denim eggplant elephant espresso fuchsia gold granite grape graphite grass "
    "gray green grey heather indigo ivory ivy khaki lavender lemon leopard light lilac lime magenta maroon "
    "mauve merlot midnight mint mocha multicolor mushroom mustard natural navy nude olive orange peach pewter "
    "pink plum purple rainbow red rose royal rust sand sapphire seashell silver skull slate steel stone "
    "stonewash sunflower tan taupe teal tiger turquoise violet walnut wheat white wine yellow"
).split()

_LATIN1 = {i: None for i in range(128, 256)}  # thefuzz's force_ascii drops exactly these


def fuzzy(a: str, b: str) -> int:
    """thefuzz's ``fuzz.token_set_ratio(a, b)``: processed strings, integer score 0-100."""
    a = utils.default_process(str(a).translate(_LATIN1))
    b = utils.default_process(str(b).translate(_LATIN1))
    if not a or not b:
        return 0
    return int(round(fuzz.token_set_ratio(a, b)))


def normalize_color(value: str) -> str:
    """The first colour word of ``COLOR_SET`` contained in ``value``, else ``value`` itself."""
    for color in COLOR_SET:
        if color in value:
            return color
    return value


# -- noun extraction (spaCy approximation; see the module docstring) ------------------------------
_CLOSED_CLASS = frozenset("""
a an the and or but nor so yet for with without of in on at by to from into onto over under up down off out
about above below between among through across against along around before after during per via vs versus
than as if then while because since until upon within beneath beside besides toward towards like unlike
is are was were be been being am do does did has have had can could will would shall should may might must
i me my mine we us our ours you your yours he him his she her hers it its they them their theirs this that
these those who whom whose which what there here all any each every both either neither some such no not
only very more most less least much many few own same other another too also just even ever again
""".split())
_LOWER_ADJECTIVES = frozenset("""
new old big small large little long short high low tall wide narrow thick thin heavy light soft hard
fresh dry wet hot cold warm cool clean easy simple great good best better nice fine pure natural organic
real true free full empty open extra super ultra premium classic modern vintage casual formal cute pretty
beautiful elegant stylish comfortable durable portable adjustable washable reusable waterproof lightweight
professional original perfect strong quick fast slow smart mini multi non anti
""".split())
_ADJ_SUFFIXES = ("able", "ible", "ful", "less", "ous")
_LY_NOUNS = frozenset("family supply jelly belly lily assembly butterfly dragonfly firefly poly italy july holly "
                      "rally ally bully fly doily anomaly reply monopoly".split())
_TOKEN = re.compile(r"(?:[A-Za-z]\.){2,}|[\w']+", re.UNICODE)  # D.O.N. whole; hyphen, slash, comma split off
_NUMBER = re.compile(r"^[\d.,/]+$")


def title_nouns(title: str) -> list[str]:
    """The lower-cased nouns of a product title, as upstream's spaCy NOUN/PROPN filter would see them."""
    nouns = []
    for token in _TOKEN.findall(title):
        word = token.strip("'")
        low = word.lower()
        if not low or _NUMBER.match(low) or not any(c.isalpha() for c in low) or low in _CLOSED_CLASS:
            continue
        if len(low) > 4 and low.endswith("ed") and not low.endswith("eed"):
            continue  # participles: Listed, Padded, Insulated
        if len(low) > 4 and low.endswith("ly") and low not in _LY_NOUNS:
            continue  # adverbs
        if word.islower() and (low in _LOWER_ADJECTIVES or low.endswith(_ADJ_SUFFIXES)):
            continue  # spaCy tags lower-case adjectives ADJ; capitalised ones mostly PROPN
        nouns.append(low)
    return nouns


# -- the four factors -------------------------------------------------------------------------------
@dataclass(frozen=True)
class TypeReward:
    r_type: float
    query_match: bool
    category_match: bool
    title_score: float


def type_reward(product: "Product", goal: "Goal") -> TypeReward:
    """Upstream's ``get_type_reward``: is the purchase the same kind of product as the goal's?"""
    query_match = product.query == goal.query
    bought_levels = {x.strip() for x in product.product_category.split("›")}
    goal_levels = {x.strip() for x in goal.product_category.split("›")}
    category_match = len(bought_levels & goal_levels) >= 2
    bought_nouns = set(title_nouns(product.title))
    goal_nouns = title_nouns(goal.name)  # a list: repeated nouns weigh twice, as upstream
    title_score = 0.2 if not goal_nouns else len(bought_nouns & set(goal_nouns)) / len(goal_nouns)
    r_type = 1.0
    if not (query_match or category_match or title_score > 0.2):
        r_type = 0.5
    if title_score < 0.1:
        r_type = 0.1
    if title_score == 0.0:
        r_type = 0.0
    return TypeReward(r_type, query_match, category_match, title_score)


def attribute_matches(product: "Product", goal_attributes: Iterable[str]) -> int:
    """Upstream's ``get_attribute_reward`` count: fuzzy product attribute, else substring of the text."""
    title = product.title.lower()
    bullets = " ".join(product.bullet_points).lower()
    description = product.description.lower()
    count = 0
    for g_attr in goal_attributes:
        if any(fuzzy(p_attr, g_attr) > MATCH_THRESHOLD for p_attr in product.attributes):
            count += 1
        elif g_attr in title or g_attr in bullets or g_attr in description:
            count += 1
    return count


def option_matches(chosen: Iterable[str], goal_options: Iterable[str]) -> int:
    """Upstream's ``get_option_reward`` count: goal options hit by a chosen option (colours normalised)."""
    chosen_norm = [normalize_color(o) for o in chosen]
    return sum(any(fuzzy(c, normalize_color(g)) > MATCH_THRESHOLD for c in chosen_norm) for g in goal_options)


@dataclass(frozen=True)
class Reward:
    """The reward of one purchase and its parts (upstream's ``verbose`` info)."""

    reward: float
    r_type: float
    r_att: float
    r_option: float | None
    r_price: bool
    query_match: bool
    category_match: bool
    title_score: float

    def as_dict(self) -> dict[str, float | bool | None]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def get_reward(product: "Product", goal: "Goal", price: float, options: dict[str, str]) -> Reward:
    """The reward of buying ``product`` at hidden ``price`` with ``options`` ({name: value}) for ``goal``."""
    t = type_reward(product, goal)
    r_price = price <= goal.price_upper
    n_attr = attribute_matches(product, goal.attributes)
    n_opt = option_matches(options.values(), goal.goal_options)
    n_goal_attr, n_goal_opt = len(goal.attributes), len(goal.goal_options)
    total = (n_attr + n_opt + r_price) / (n_goal_attr + n_goal_opt + 1) * t.r_type
    return Reward(
        reward=total,
        r_type=t.r_type,
        r_att=n_attr / n_goal_attr if n_goal_attr else 0.0,
        r_option=n_opt / n_goal_opt if n_goal_opt else None,
        r_price=bool(r_price),
        query_match=t.query_match,
        category_match=t.category_match,
        title_score=t.title_score,
    )
