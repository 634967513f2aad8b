"""The bundled catalogue: products and instructions generated deterministically from ``catalogue_spec``.

Output is WebShop's official raw format (``items_shuffle``-style product records, an
``items_ins_v2``-style attribute map, an ``items_human_ins``-style instruction map), so the bundled
catalogue goes through the same loader as the official data (``data.build_catalogue``): same price
parsing, goal construction, price limits, seed-233 shuffle and test/valid/train split.

Defaults: 5 departments x 10 kinds x 30 products = 1500 products, 2 instructions each = 3000 goals
(test 500, valid 1000, train 1500). Every random choice comes from ``random.Random(<string>)`` seeds
(SHA-512 based), so the catalogue is identical in every process whatever ``PYTHONHASHSEED`` is.
Generating it takes well under a second, so it is built in memory on first use rather than shipped.

Scores on this catalogue are NOT comparable with published WebShop numbers (different products,
instructions and search engine); use the official files (``data.load_official``) for those.

Write the files with ``python -m madopd_envs.webshop.catalogue --out DIR``.
"""

from __future__ import annotations

import argparse
import functools
import json
import random
import string
from pathlib import Path
from typing import Any

from madopd_envs.webshop.catalogue_spec import DEPARTMENTS, Department, Kind
from madopd_envs.webshop.data import HUMAN_FILE, Catalogue, build_catalogue

PRODUCTS_PER_KIND = 30
INSTRUCTIONS_PER_PRODUCT = 2
LINES = ("Essentials", "Pro", "Classic", "Signature", "Everyday", "Premium", "Original", "Select", "Studio",
         "Advanced", "Elite", "Heritage", "Active", "Nova", "Prime")
_TEMPLATES = (
    "i need {a}{query} with {attrs}{opts}",
    "i am looking for {a}{query} that is {attrs}{opts}",
    "find me {a}{attrs} {query}{opts}",
    "i want to buy {a}{query} which has {attrs}{opts}",
    "im looking for {a}{attrs} {query}{opts}",
    "can you find me {a}{query}, {attrs}{opts}",
)
_OPTION_PHRASES = {
    "color": ("in {v}", "in {v} color", "in the color {v}"),
    "size": ("in size {v}", "size {v}", "in {v} size"),
    "scent": ("with {v} scent", "in {v} scent"),
    "flavor name": ("in {v} flavor", "{v} flavor"),
    "style": ("in the {v} style", "style {v}"),
}


def _article(query: str) -> str:
    if query.endswith("s") and not query.endswith("ss"):
        return ""  # plural kinds: "coffee beans", "athletic socks"
    return "an " if query[0] in "aeiou" else "a "


def _title_case(phrase: str) -> str:
    small = {"of", "and", "for", "in", "with", "to"}
    return " ".join(w if any(c.isdigit() for c in w) or w in small else w.capitalize() for w in phrase.split())


def _price(rng: random.Random, kind: Kind) -> str:
    low, high = kind.price
    cents = rng.choice((0.99, 0.49, 0.95, 0.0))
    base = round(int(rng.uniform(low, high)) + cents, 2)
    if rng.random() < 0.2:  # some listings quote a range, hiding the price (upstream draws inside it)
        top = round(base + int(rng.uniform(2, max(3.0, (high - low) / 4))) + 0.99, 2)
        return f"${base:.2f} - ${top:.2f}"
    return f"${base:.2f}"


def _product(dept: Department, kind: Kind, rng: random.Random, asin: str) -> tuple[dict[str, Any], list[str]]:
    brand, line, head = rng.choice(dept.brands), rng.choice(LINES), rng.choice(kind.heads)
    attrs = rng.sample(kind.attributes, k=min(len(kind.attributes), rng.randint(3, 4)))
    options: dict[str, list[dict[str, str]]] = {}
    for name, values in kind.options.items():
        if len(kind.options) > 1 and rng.random() < 0.15:
            continue  # some listings offer fewer option axes
        picked = set(rng.sample(range(len(values)), k=rng.randint(min(2, len(values)), len(values))))
        options[name] = [{"value": v, "image": None} for i, v in enumerate(values) if i in picked]
    title = f"{brand} {line} {_title_case(attrs[0])} {head}, {_title_case(attrs[1])}"
    if rng.random() < 0.5:
        title += f" and {_title_case(attrs[2])}"
    blurbs = rng.sample(dept.blurbs, 2)
    bullets = [f"{a.upper()} - {b}" for a, b in zip(attrs, blurbs + rng.sample(dept.blurbs, len(dept.blurbs)))]
    description = (f"The {brand} {line} {head.lower()} brings together {', '.join(attrs[:-1])} and {attrs[-1]}. "
                   f"{blurbs[0]}. {blurbs[1]}.")
    record = {
        "asin": asin,
        "name": title,
        "full_description": description,
        "small_description": bullets,
        "pricing": _price(rng, kind),
        "customization_options": options,
        "images": [""],
        "category": dept.name,
        "query": kind.query,
        "product_category": f"{dept.top} › {kind.path}",
    }
    return record, attrs


def _instruction(kind: Kind, record: dict[str, Any], attrs: list[str], rng: random.Random) -> dict[str, Any]:
    goal_attrs = rng.sample(attrs, k=rng.randint(1, min(3, len(attrs))))
    chosen, phrases = [], []
    for name, contents in record["customization_options"].items():
        if rng.random() < 0.8:
            value = rng.choice(contents)["value"]
            chosen.append(value)
            phrases.append(rng.choice(_OPTION_PHRASES.get(name, ("with {v} " + name,))).format(v=value))
    opts = f", {' and '.join(phrases)}" if phrases else ""
    text = rng.choice(_TEMPLATES).format(a=_article(kind.query), query=kind.query, attrs=" and ".join(goal_attrs),
                                         opts=opts)
    return {"asin": record["asin"], "instruction": text, "instruction_attributes": goal_attrs,
            "instruction_options": chosen}


def generate_raw(seed: int = 0, products_per_kind: int = PRODUCTS_PER_KIND,
                 instructions_per_product: int = INSTRUCTIONS_PER_PRODUCT
                 ) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """The three official-format structures: products, attributes (items_ins_v2), human instructions."""
    asin_rng = random.Random(f"webshop-asins-{seed}")
    alphabet = string.ascii_uppercase + string.digits
    products, attributes, human, used = [], {}, {}, set()
    for dept in DEPARTMENTS:
        for kind in dept.kinds:
            for i in range(products_per_kind):
                asin = "B0" + "".join(asin_rng.choices(alphabet, k=8))
                while asin in used:
                    asin = "B0" + "".join(asin_rng.choices(alphabet, k=8))
                used.add(asin)
                rng = random.Random(f"webshop-{seed}-{dept.name}-{kind.query}-{i}")
                record, attrs = _product(dept, kind, rng, asin)
                instructions = [_instruction(kind, record, attrs, rng) for _ in range(instructions_per_product)]
                products.append(record)
                attributes[asin] = {"attributes": attrs, "instruction": instructions[0]["instruction"],
                                    "instruction_attributes": instructions[0]["instruction_attributes"]}
                human[asin] = instructions
    random.Random(f"webshop-order-{seed}").shuffle(products)  # upstream's items_shuffle is shuffled too
    return products, attributes, human


@functools.lru_cache(maxsize=4)
def bundled_catalogue(seed: int = 0, human_goals: bool = True) -> Catalogue:
    """The bundled catalogue (built once per process and seed)."""
    products, attributes, human = generate_raw(seed)
    return build_catalogue(products, attributes, human, human_goals=human_goals, source=f"bundled:seed={seed}")


def write_official_files(out_dir: str | Path, seed: int = 0) -> list[Path]:
    """Write the bundled catalogue as ``items_shuffle.json``, ``items_ins_v2.json``, ``items_human_ins.json``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in zip(("items_shuffle.json", "items_ins_v2.json", HUMAN_FILE), generate_raw(seed)):
        path = out / name
        path.write_text(json.dumps(data, indent=1, ensure_ascii=False), encoding="utf-8")
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="directory to write the three JSON files into")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for path in write_official_files(args.out, args.seed):
        print(path)


if __name__ == "__main__":
    main()
