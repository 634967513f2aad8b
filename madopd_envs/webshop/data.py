"""Products, goals and the loader of WebShop's official files (upstream's ``load_products``/``get_goals``).

The official release is three JSON files: ``items_shuffle*.json`` (the products), ``items_ins_v2*.json``
(per-product attributes and synthetic instructions) and ``items_human_ins.json`` (crowd-sourced
instructions). ``build_catalogue`` turns their raw records into typed :class:`Product`/:class:`Goal`
objects exactly as upstream does -- same key cleaning, price parsing, option lower-casing, goal
construction and goal order (shuffled with ``random.seed(233)``) -- so goal ``i`` here is goal ``i``
upstream. The bundled catalogue (``catalogue.py``) is generated in this same raw format and goes
through this same function.

One deliberate difference: upstream draws hidden prices of ranged products and the goals' price
limits from Python's *unseeded* global RNG (before it seeds 233), so they change between runs; here
they come from ``random.Random(PRICE_SEED)``, so every run and every worker sees the same goals.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from itertools import product as cartesian
from pathlib import Path
from typing import Any, Iterable

GOAL_SHUFFLE_SEED = 233  # upstream: random.seed(233); random.shuffle(goals)
PRICE_SEED = 233
PRICE_RANGE = [10.0 * i for i in range(1, 100)]  # upstream goal.py: price limits 10, 20, ..., 990
NO_PRICE_LIMIT = 1_000_000.0
# Upstream's splits of the shuffled goals (baseline_models/env.py); "eval" is called "valid" here.
SPLIT_BOUNDS: dict[str, tuple[int, int | None]] = {"test": (0, 500), "valid": (500, 1500), "train": (1500, None)}


@dataclass(frozen=True, slots=True)
class Product:
    """One product as the engine sees it (upstream's cleaned product dict, typed).

    ``title`` is both upstream's ``Title`` and ``name``; ``options`` maps a lower-cased option name
    to its lower-cased values, in page order; ``pricing`` holds one price or a ``[low, high]`` range.
    """

    asin: str
    title: str
    description: str
    bullet_points: tuple[str, ...]
    attributes: tuple[str, ...]
    options: dict[str, tuple[str, ...]]
    price_tag: str
    pricing: tuple[float, ...]
    category: str
    query: str
    product_category: str
    rating: str = "N.A."
    reviews: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class Goal:
    """One instruction and what the reward checks it against (upstream's goal dict, typed).

    ``goal_options`` holds option *values*. Human goals store a list of values; upstream's synthetic
    goals store ``{name: value}``, and its reward matches each ``(name, value)`` *pair* (it passes
    ``goal_options.items()``): ``option_names`` keeps the names of synthetic goals (empty for human ones).
    """

    asin: str
    instruction_text: str
    attributes: tuple[str, ...]
    goal_options: tuple[str, ...]
    price_upper: float
    query: str
    category: str
    product_category: str
    name: str
    weight: float = 1.0
    option_names: tuple[str, ...] = ()


@dataclass
class Catalogue:
    """Products, their hidden prices and the goals in upstream's shuffled order."""

    products: list[Product]
    prices: dict[str, float]
    goals: list[Goal]
    source: str = ""
    by_asin: dict[str, Product] = field(init=False)

    def __post_init__(self) -> None:
        self.by_asin = {p.asin: p for p in self.products}

    def split_indices(self, split: str) -> range:
        """Goal indices of ``split``: test 0-499, valid 500-1499, train 1500+ (upstream's protocol)."""
        if split not in SPLIT_BOUNDS:
            raise ValueError(f"unknown WebShop split {split!r}; known: {list(SPLIT_BOUNDS)}")
        lo, hi = SPLIT_BOUNDS[split]
        n = len(self.goals)
        return range(min(lo, n), n if hi is None else min(hi, n))

    def split_of(self, index: int) -> str:
        for name in SPLIT_BOUNDS:
            if index in self.split_indices(name):
                return name
        raise IndexError(f"goal {index} does not exist; this catalogue has {len(self.goals)} goals")


# -- raw records -> typed objects (upstream engine.load_products) ---------------------------------
def parse_pricing(pricing: Any) -> tuple[list[float], str]:
    """Upstream's price parsing: ``"$12.99"`` -> ``[12.99]``, ``"$10.00 - $20.00"`` -> ``[10.0, 20.0]``.

    Missing prices become ``[100.0]`` as upstream. Lists of numbers (as some re-releases store them)
    are accepted too. The tag is rendered with Python's float repr, as upstream (``$12.99``, ``$100.0``).
    """
    values: list[float] = []
    if isinstance(pricing, (list, tuple)):
        values = [float(v) for v in pricing if isinstance(v, (int, float))]
    elif isinstance(pricing, str) and pricing:
        for chunk in pricing.split("$")[1:]:
            digits = re.sub(r"[^\d.]", "", chunk)
            try:
                values.append(float(Decimal(digits)))
            except InvalidOperation:
                continue  # upstream would crash on such a fragment; skipping it keeps the product
    if not values:
        return [100.0], "$100.0"
    if len(values) == 1:
        return values, f"${values[0]}"
    return values[:2], f"${values[0]} to ${values[1]}"


def _options(customization: Any) -> dict[str, tuple[str, ...]]:
    options: dict[str, tuple[str, ...]] = {}
    for name, contents in (customization or {}).items():
        if contents is None:
            continue
        values = []
        for content in contents:
            raw = content.get("value", "") if isinstance(content, dict) else str(content)
            values.append(str(raw).strip().replace("/", " | ").lower())
        options[str(name).lower()] = tuple(values)
    return options


def _product(raw: dict[str, Any], attributes: dict[str, Any]) -> Product:
    pricing, tag = parse_pricing(raw.get("pricing"))
    bullets = raw.get("small_description")
    bullets = [str(b) for b in bullets] if isinstance(bullets, list) else [str(bullets or "")]
    attrs = attributes.get(raw["asin"], {}).get("attributes")
    return Product(
        asin=raw["asin"],
        title=str(raw.get("name", "")),
        description=str(raw.get("full_description") or ""),
        bullet_points=tuple(bullets),
        attributes=tuple(attrs) if attrs else ("DUMMY_ATTR",),  # upstream's placeholder
        options=_options(raw.get("customization_options")),
        price_tag=tag,
        pricing=tuple(pricing),
        category=str(raw.get("category", "")),
        query=str(raw.get("query", "")).lower().strip(),
        product_category=str(raw.get("product_category", "")),
    )


def _hidden_price(pricing: tuple[float, ...], rng: random.Random) -> float:
    """Upstream's ``generate_product_prices``: a range hides a uniform draw inside it."""
    return pricing[0] if len(pricing) == 1 else rng.uniform(*pricing[:2])


def _price_limit(price: float, rng: random.Random) -> tuple[float, str]:
    """Upstream's limit: the larger of 2 draws from the first 4 multiples of 10 above the price."""
    above = [p for p in PRICE_RANGE if p > price][:4]
    if len(above) < 2:
        return NO_PRICE_LIMIT, ""
    _, upper = sorted(rng.sample(above, 2))
    return upper, f", and price lower than {upper:.2f} dollars"


def build_catalogue(
    raw_products: Iterable[dict[str, Any]],
    attributes: dict[str, Any],
    human_instructions: dict[str, list[dict[str, Any]]] | None,
    *,
    num_products: int | None = None,
    human_goals: bool = True,
    source: str = "",
) -> Catalogue:
    """Build products and goals from raw official-format records, as upstream's SimServer does.

    Args:
        raw_products: the records of ``items_shuffle*.json``, in file order.
        attributes: ``items_ins_v2*.json`` (asin -> ``attributes``, ``instruction``,
            ``instruction_attributes``).
        human_instructions: ``items_human_ins.json`` (asin -> list of instructions); needed when
            ``human_goals`` is true.
        num_products: keep only the first N records (upstream's ``num_products``).
        human_goals: crowd-sourced goals (upstream's default for the text env) or synthetic ones.
    """
    raws = list(raw_products)
    if num_products is not None:
        raws = raws[:num_products]
    if human_goals and human_instructions is None:
        raise ValueError("human_goals=True needs items_human_ins.json")
    seen: set[str] = set()
    products: list[Product] = []
    for raw in raws:
        asin = str(raw.get("asin", "nan"))
        if asin == "nan" or len(asin) > 10 or asin in seen:  # upstream's filters
            continue
        seen.add(asin)
        products.append(_product(raw, attributes))
    rng = random.Random(PRICE_SEED)
    prices = {p.asin: _hidden_price(p.pricing, rng) for p in products}
    if human_goals:
        goals = _human_goals(products, prices, human_instructions or {}, rng)
    else:
        goals = _synthetic_goals(products, prices, attributes, rng)
    random.Random(GOAL_SHUFFLE_SEED).shuffle(goals)
    return Catalogue(products=products, prices=prices, goals=goals, source=source)


def _goal(p: Product, text: str, attrs: list[str], options: Iterable[str], upper: float, weight: float = 1.0,
          option_names: Iterable[str] = ()) -> Goal:
    return Goal(asin=p.asin, instruction_text=text, attributes=tuple(attrs), goal_options=tuple(options),
                price_upper=upper, query=p.query, category=p.category, product_category=p.product_category,
                name=p.title, weight=weight, option_names=tuple(option_names))


def _human_goals(products: list[Product], prices: dict[str, float], human: dict[str, list[dict[str, Any]]],
                 rng: random.Random) -> list[Goal]:
    goals = []
    for p in products:
        for ins in human.get(p.asin, []):
            attrs = list(ins.get("instruction_attributes") or [])
            if not attrs:
                continue  # upstream skips instructions without attributes
            upper, price_text = _price_limit(prices[p.asin], rng)
            options = ins.get("instruction_options") or []
            options = options.values() if isinstance(options, dict) else options
            goals.append(_goal(p, str(ins["instruction"]).strip(".") + price_text, attrs, options, upper))
    return goals


def _synthetic_goals(products: list[Product], prices: dict[str, float], attributes: dict[str, Any],
                     rng: random.Random) -> list[Goal]:
    """Upstream's synthetic goals: one per combination of a product's option values."""
    goals, counts = [], {}
    for p in products:
        entry = attributes.get(p.asin, {})
        text, attrs = entry.get("instruction"), list(entry.get("instruction_attributes") or [])
        if not text or not attrs:
            continue
        upper, price_text = _price_limit(prices[p.asin], rng)
        names = sorted(p.options)
        for combo in cartesian(*(p.options[n] for n in names)):
            option_text = ", and ".join(f"{n}: {v}" for n, v in zip(names, combo))
            option_text = f" with {option_text}" if option_text else ""
            goals.append(_goal(p, f"{text}{option_text}{price_text}", attrs, combo, upper, option_names=names))
            for a in attrs:
                counts[a] = counts.get(a, 0) + 1
    return [replace(g, weight=sum(1.0 / counts[a] for a in g.attributes) / len(g.attributes)) for g in goals]


# -- files on disk ----------------------------------------------------------------------------------
PRODUCT_FILES = ("items_shuffle.json", "items_shuffle_1000.json")
ATTRIBUTE_FILES = ("items_ins_v2.json", "items_ins_v2_1000.json")
HUMAN_FILE = "items_human_ins.json"


def find_official_files(data_dir: str | Path, variant: str = "auto") -> dict[str, Path]:
    """Locate the official files in ``data_dir``.

    ``variant``: ``"all"`` (``items_shuffle.json``, 1.18M products), ``"1000"``
    (``items_shuffle_1000.json``, upstream's default) or ``"auto"`` (the full files when present).
    """
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"WebShop data directory {str(root)!r} does not exist")
    order = {"all": (0,), "1000": (1,), "auto": (0, 1)}.get(variant)
    if order is None:
        raise ValueError(f"variant must be 'auto', 'all' or '1000'; got {variant!r}")
    found: dict[str, Path] = {}
    for key, names in (("products", PRODUCT_FILES), ("attributes", ATTRIBUTE_FILES)):
        for i in order:
            if (root / names[i]).is_file():
                found[key] = root / names[i]
                break
        else:
            wanted = " or ".join(names[i] for i in order)
            raise FileNotFoundError(
                f"{root} lacks {wanted}. Get the official WebShop data (setup.sh in princeton-nlp/WebShop "
                f"downloads it from Google Drive; academic-use licence) and point data_dir at its data/ folder.")
    if (root / HUMAN_FILE).is_file():
        found["human"] = root / HUMAN_FILE
    return found


def load_official(data_dir: str | Path, *, variant: str = "auto", num_products: int | None = None,
                  human_goals: bool = True) -> Catalogue:
    """Load the official WebShop files from ``data_dir`` (see :func:`find_official_files`)."""
    files = find_official_files(data_dir, variant)
    if human_goals and "human" not in files:
        raise FileNotFoundError(f"{data_dir} lacks {HUMAN_FILE}; pass human_goals=False for synthetic goals")
    with open(files["products"], encoding="utf-8") as f:
        raw_products = json.load(f)
    with open(files["attributes"], encoding="utf-8") as f:
        attributes = json.load(f)
    human = None
    if human_goals:
        with open(files["human"], encoding="utf-8") as f:
            human = json.load(f)
    return build_catalogue(raw_products, attributes, human, num_products=num_products, human_goals=human_goals,
                           source=f"official:{files['products']}")
