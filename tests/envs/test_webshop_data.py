"""WebShop data: the official-format loader (on a small fixture) and the bundled catalogue generator."""

import hashlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from madopd_envs.webshop.catalogue import bundled_catalogue, generate_raw, write_official_files
from madopd_envs.webshop.catalogue_spec import DEPARTMENTS
from madopd_envs.webshop.data import PRICE_RANGE, build_catalogue, find_official_files, load_official, parse_pricing

FIXTURE = Path(__file__).parent / "fixtures" / "webshop_official"


@pytest.fixture(scope="module")
def fixture_catalogue():
    return load_official(FIXTURE)


# -- the official format ------------------------------------------------------------------------------
def test_loader_filters_and_cleans_products_like_upstream(fixture_catalogue):
    c = fixture_catalogue
    # 'nan', a duplicate and an 11+ character asin are dropped; file order kept.
    assert [p.asin for p in c.products] == ["B0FIX00001", "B0FIX00002", "B0FIX00003", "B0FIX00004", "B0FIX00005"]
    p1, p2, p3, p4, p5 = c.products
    assert p1.query == "deodorant"  # lower-cased and stripped
    assert p1.options == {"scent": ("bright citrus", "lavender | sage"),  # names/values lower-cased, '/' -> ' | '
                          "size": ("3 ounce (pack of 1)", "3 ounce (pack of 2)")}
    assert p1.attributes == ("aluminum free", "sensitive skin", "long lasting")
    assert (p2.pricing, p2.price_tag) == ((8.0, 12.0), "$8.0 to $12.0")
    assert 8.0 <= c.prices["B0FIX00002"] <= 12.0  # a range hides a uniform draw inside it
    assert (p3.pricing, p3.price_tag, p3.options) == ((100.0,), "$100.0", {})  # no price -> $100.0
    assert p4.options == {"color": ("brown", "dark chocolate")} and p4.pricing == (1049.99,)  # null option dropped
    assert p5.bullet_points == ("No sugar added, nothing artificial",) and p5.attributes == ("DUMMY_ATTR",)


def test_parse_pricing_cases():
    assert parse_pricing("$12.99") == ([12.99], "$12.99")
    assert parse_pricing("$1,049.99") == ([1049.99], "$1049.99")
    assert parse_pricing(None) == ([100.0], "$100.0")
    assert parse_pricing([5, 9.5]) == ([5.0, 9.5], "$5.0 to $9.5")


def test_human_goals_order_is_upstreams_seed_233_shuffle(fixture_catalogue):
    c = fixture_catalogue
    # Goals in product order, skipping the instruction without attributes and the unknown asin...
    unshuffled = ["B0FIX00001/0", "B0FIX00001/1", "B0FIX00002/0", "B0FIX00004/0", "B0FIX00005/0"]
    random.seed(233)  # ...then upstream's exact call: the module-level RNG seeded with 233
    random.shuffle(unshuffled)
    human = json.loads((FIXTURE / "items_human_ins.json").read_text())
    expected = [human[a][int(i)]["instruction"].strip(".") for a, i in (k.split("/") for k in unshuffled)]
    assert [g.instruction_text.split(", and price lower than")[0] for g in c.goals] == expected


def test_goal_price_limits_follow_upstreams_rule(fixture_catalogue):
    c = fixture_catalogue
    for g in c.goals:
        price = c.prices[g.asin]
        above = [p for p in PRICE_RANGE if p > price][:4]
        if len(above) >= 2:
            assert g.price_upper in above[1:] and g.instruction_text.endswith(
                f", and price lower than {g.price_upper:.2f} dollars")
        else:  # $1049.99: no limit, no price clause
            assert g.price_upper == 1_000_000 and "price lower" not in g.instruction_text
    boots = next(g for g in c.goals if g.asin == "B0FIX00004")
    assert boots.instruction_text == "i need womens hiking boots with a rubber sole in brown"
    assert boots.goal_options == ("brown",) and boots.attributes == ("rubber sole",)


def test_synthetic_goals_one_per_option_combination():
    c = load_official(FIXTURE, human_goals=False)
    per_asin = {a: sum(g.asin == a for g in c.goals) for a in {g.asin for g in c.goals}}
    assert per_asin == {"B0FIX00001": 4, "B0FIX00002": 3, "B0FIX00003": 1, "B0FIX00004": 2}
    g = next(g for g in c.goals if g.asin == "B0FIX00001")
    assert " with scent: " in g.instruction_text and ", and size: 3 ounce (pack of " in g.instruction_text
    assert g.weight == pytest.approx(0.25)  # mean over its 2 attributes of 1 / (4 goals using it)


def test_num_products_keeps_the_first_records():
    c = load_official(FIXTURE, num_products=2)
    assert [p.asin for p in c.products] == ["B0FIX00001", "B0FIX00002"] and {g.asin for g in c.goals} <= {
        "B0FIX00001", "B0FIX00002"}


def test_missing_files_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_official(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="items_shuffle.json or items_shuffle_1000.json.*Google Drive"):
        load_official(tmp_path)
    with pytest.raises(FileNotFoundError, match="items_shuffle.json"):
        find_official_files(FIXTURE, variant="all")
    assert find_official_files(FIXTURE, variant="1000")["products"].name == "items_shuffle_1000.json"
    (tmp_path / "items_shuffle.json").write_text("[]")
    (tmp_path / "items_ins_v2.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="human_goals=False"):
        load_official(tmp_path)
    assert load_official(tmp_path, human_goals=False).goals == []
    with pytest.raises(ValueError, match="variant"):
        find_official_files(FIXTURE, variant="small")


# -- the bundled catalogue ------------------------------------------------------------------------------
def test_bundled_catalogue_size_and_splits():
    c = bundled_catalogue()
    assert len(c.products) >= 1000 and len({p.asin for p in c.products}) == len(c.products)
    assert {p.category for p in c.products} == {d.name for d in DEPARTMENTS} and len(DEPARTMENTS) == 5
    assert len({p.query for p in c.products}) == 50
    assert [len(c.split_indices(s)) for s in ("test", "valid", "train")] == [500, 1000, 1500]
    assert c.split_of(499) == "test" and c.split_of(500) == "valid" and c.split_of(1500) == "train"


def test_bundled_goals_are_satisfiable_by_their_target():
    c = bundled_catalogue()
    for g in c.goals:
        p = c.by_asin[g.asin]
        assert set(g.attributes) <= set(p.attributes) and 1 <= len(g.attributes) <= 3
        assert all(any(o in vals for vals in p.options.values()) for o in g.goal_options)
        assert c.prices[g.asin] < g.price_upper
        assert g.instruction_text.endswith(f"price lower than {g.price_upper:.2f} dollars")
    prices = [c.prices[p.asin] for p in c.products]
    assert 3 < min(prices) and max(prices) < 400 and sum(len(p.pricing) == 2 for p in c.products) > 100


def test_bundled_written_in_official_format_loads_identically(tmp_path):
    paths = write_official_files(tmp_path)
    assert sorted(p.name for p in paths) == ["items_human_ins.json", "items_ins_v2.json", "items_shuffle.json"]
    loaded = load_official(tmp_path)
    bundled = bundled_catalogue()
    assert loaded.products == bundled.products and loaded.goals == bundled.goals and loaded.prices == bundled.prices


def test_bundled_synthetic_goals_also_build():
    raw = generate_raw()
    c = build_catalogue(*raw, human_goals=False)
    assert len(c.goals) > len(c.products) and all(g.goal_options or not c.by_asin[g.asin].options for g in c.goals)


def test_generation_is_identical_across_processes_and_hash_seeds():
    code = ("import hashlib, json; from madopd_envs.webshop.catalogue import generate_raw; "
            "print(hashlib.sha256(json.dumps(generate_raw()).encode()).hexdigest())")
    here = hashlib.sha256(json.dumps(generate_raw()).encode()).hexdigest()
    hash_seed = "1" if os.environ.get("PYTHONHASHSEED") != "1" else "2"  # differs from this process's
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONHASHSEED": hash_seed}).stdout.strip()
    assert out == here
