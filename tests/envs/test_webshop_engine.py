"""WebShop pages, actions and observations (upstream's text mode), search, and the env's contract."""

from pathlib import Path

import pytest

import madopd_envs
from madopd_envs.webshop.data import load_official
from madopd_envs.webshop.engine import SEARCH_TEMPLATE, Page, ShopEngine
from madopd_envs.webshop.env import WebShopEnv, _cached_index
from madopd_envs.webshop.search import SearchIndex, document_text
from madopd_envs.testing import check_text_env

FIXTURE = Path(__file__).parent / "fixtures" / "webshop_official"
TITLE1 = "Brightleaf Citrus Deodorant for Sensitive Skin, Aluminum Free, 3 Ounce"


@pytest.fixture(scope="module")
def shop():
    catalogue = load_official(FIXTURE)
    return catalogue, SearchIndex.build(catalogue.products)


@pytest.fixture
def eng(shop):
    """The engine on the fixture's goal 1: B0FIX00001, bright citrus + 3 ounce (pack of 1)."""
    e = ShopEngine(*shop)
    e.start(shop[0].goals[1])
    assert e.s.goal.asin == "B0FIX00001"
    return e


@pytest.fixture(scope="module")
def env():
    e = madopd_envs.make("madopd/WebShop-v0")
    yield e
    e.close()


def head(e: ShopEngine) -> str:
    return f"Instruction: [SEP] {e.s.goal.instruction_text} [SEP] Back to Search"


# -- pages and their text -----------------------------------------------------------------------------
def test_search_page(eng):
    assert eng.observation() == f"WebShop [SEP] Instruction: [SEP] {eng.s.goal.instruction_text} [SEP] Search"
    assert eng.available_actions() == [SEARCH_TEMPLATE]


def test_results_page_lists_asin_title_price(eng):
    assert eng.act("search[Citrus Deodorant]").valid
    assert eng.s.keywords == "citrus deodorant"  # lower-cased as upstream
    assert eng.observation() == (
        f"{head(eng)} [SEP] Page 1 (Total results: 2) [SEP] Next > [SEP] B0FIX00001 [SEP] {TITLE1} [SEP] $10.99"
        " [SEP] B0FIX00002 [SEP] Cedarline Natural Deodorant Stick for Men, Sandalwood [SEP] $8.0 to $12.0")
    assert eng.available_actions() == ["click[back to search]", "click[next >]", "click[b0fix00001]",
                                       "click[b0fix00002]"]


def test_item_page_options_sub_pages_and_navigation(eng):
    eng.act("search[citrus deodorant]")
    assert eng.act("click[B0FIX00001]").valid  # clicks are case-insensitive
    assert eng.observation() == (
        f"{head(eng)} [SEP] < Prev [SEP] scent [SEP] bright citrus [SEP] lavender | sage [SEP] size [SEP] "
        f"3 ounce (pack of 1) [SEP] 3 ounce (pack of 2) [SEP] {TITLE1} [SEP] Price: $10.99 [SEP] Rating: N.A. "
        "[SEP] Description [SEP] Features [SEP] Reviews [SEP] Buy Now")
    assert eng.available_actions() == [
        "click[back to search]", "click[< prev]", "click[description]", "click[features]", "click[reviews]",
        "click[buy now]", "click[bright citrus]", "click[lavender | sage]", "click[3 ounce (pack of 1)]",
        "click[3 ounce (pack of 2)]"]
    eng.act("click[lavender | sage]")
    eng.act("click[bright citrus]")  # a second choice of the same option replaces the first
    assert eng.s.options == {"scent": "bright citrus"}
    eng.act("click[Description]")
    assert eng.observation() == f"{head(eng)} [SEP] < Prev [SEP] A plant based deodorant that keeps you fresh " \
                                "all day without aluminum."
    assert eng.available_actions() == ["click[back to search]", "click[< prev]"]
    eng.act("click[< Prev]")
    assert eng.s.page is Page.ITEM and eng.s.options == {"scent": "bright citrus"}  # sub page keeps options
    eng.act("click[features]")
    assert eng.observation().endswith("< Prev [SEP] ALUMINUM FREE - made with arrowroot powder [SEP] "
                                      "Gentle on sensitive skin")
    eng.act("click[< prev]")
    eng.act("click[< prev]")  # item -> its results page, options cleared (upstream's search_results)
    assert eng.s.page is Page.RESULTS and eng.s.options == {} and eng.s.page_num == 1
    eng.act("click[back to search]")
    assert eng.s.page is Page.SEARCH and eng.s.keywords == ""


def test_buy_now_ends_with_reward(eng):
    for a in ("search[citrus deodorant]", "click[b0fix00001]", "click[bright citrus]", "click[3 ounce (pack of 1)]"):
        assert eng.act(a).valid
    out = eng.act("click[Buy Now]")
    assert out.done and out.reward == 1.0
    assert eng.observation() == "Thank you for shopping with us! [SEP] Your score (min 0.0, max 1.0) [SEP] 1.0"
    assert eng.available_actions() == []
    after = eng.act("click[back to search]")
    assert not after.valid and "episode is over" in after.message


def test_attributes_sub_page_only_with_show_attrs(shop):
    e = ShopEngine(*shop, show_attrs=True)
    e.start(shop[0].goals[1])
    e.act("search[citrus deodorant]")
    e.act("click[b0fix00001]")
    assert "[SEP] Reviews [SEP] Attributes [SEP] Buy Now" in e.observation()
    e.act("click[attributes]")
    assert e.observation().endswith("< Prev [SEP] aluminum free [SEP] sensitive skin [SEP] long lasting [SEP] beauty "
                                    "[SEP] deodorant [SEP] Beauty & Personal Care › Personal Care › Deodorants & "
                                    "Antiperspirants › Deodorants")


@pytest.mark.parametrize("action,reason", [
    ("click[nothing here]", "is not clickable"),
    ("click[search]", "search[keywords]"),
    ("search[]", "needs keywords"),
    ("buy the citrus one", "Actions look like"),
    ("search[deodorant] please", "Actions look like"),
])
def test_invalid_actions_change_nothing_and_say_why(eng, action, reason):
    before = eng.observation()
    out = eng.act(action)
    assert not out.valid and reason in out.message
    assert eng.observation() == before


def test_search_from_any_page_as_upstreams_text_env_listed_only_where_a_bar_is(shop, eng):
    # upstream's WebAgentTextEnv.step runs search[...] whatever the page; get_available_actions says
    # has_search_bar only on the search page
    assert eng.search_anywhere  # the default
    eng.act("search[deodorant]")
    assert SEARCH_TEMPLATE not in eng.available_actions()
    eng.act(f"click[{eng.s.results[0].lower()}]")
    assert eng.s.page.value == "item" and eng.act("search[speaker]").valid and eng.s.results == ["B0FIX00003"]
    strict = ShopEngine(*shop, search_anywhere=False)  # the rendered site: only where the bar is
    strict.start(shop[0].goals[1])
    assert SEARCH_TEMPLATE in strict.available_actions()
    strict.act("search[deodorant]")
    out = strict.act("search[speaker]")
    assert not out.valid and "no search bar" in out.message


# -- pagination on the bundled catalogue -----------------------------------------------------------------
def test_pagination_ten_per_page_next_always_offered(env):
    env.reset(seed=0)
    obs, *_ = env.step("search[black]")  # matches far more than 50 products
    engine = env.engine
    assert len(engine.s.results) == 50 and "Page 1 (Total results: 50) [SEP] Next > [SEP]" in obs
    assert "< Prev" not in obs and len(engine.page_products()) == 10
    for page in range(2, 6):
        obs, *_ = env.step("click[next >]")
        assert f"Page {page} (Total results: 50) [SEP] < Prev [SEP] Next > [SEP]" in obs
        assert [p.asin for p in engine.page_products()] == engine.s.results[(page - 1) * 10: page * 10]
    obs, _, _, _, info = env.step("click[next >]")  # past the last page: empty, Next > still there (upstream)
    assert obs.endswith("Page 6 (Total results: 50) [SEP] < Prev [SEP] Next >")
    assert info["admissible_actions"] == ["click[back to search]", "click[< prev]", "click[next >]"]
    env.step("click[< prev]")
    assert engine.s.page_num == 5


# -- search ------------------------------------------------------------------------------------------------
def test_document_text_is_upstreams(shop):
    p = shop[0].by_asin["B0FIX00001"]
    assert document_text(p) == (f"{TITLE1} A plant based deodorant that keeps you fresh all day without aluminum. "
                                "ALUMINUM FREE - made with arrowroot powder scent: bright citrus, lavender | sage, "
                                "and size: 3 ounce (pack of 1), 3 ounce (pack of 2)").lower()


def test_search_ranks_stems_and_returns_only_matches(shop):
    _, index = shop
    assert index.search("citrus deodorant") == ["B0FIX00001", "B0FIX00002"]
    assert index.search("speakers") == ["B0FIX00003"]  # stemmed: speaker(s)
    assert index.search("zzzz qqqq") == [] and index.search("the and of") == []  # unknown words, stop words


def test_search_ties_keep_document_order_and_cap_at_50(shop):
    catalogue, _ = shop
    from dataclasses import replace

    clones = [replace(catalogue.products[0], asin=f"B0CLONE{i:03d}") for i in range(60)]
    index = SearchIndex.build(clones)
    assert index.search("deodorant") == [f"B0CLONE{i:03d}" for i in range(50)]


def test_bundled_search_finds_the_kind(env):
    hits = env.engine.index.search("noise cancelling wireless earbuds")
    assert env.catalogue.by_asin[hits[0]].query == "wireless earbuds"


# -- the env's contract -------------------------------------------------------------------------------------
def test_env_reports_reward_on_buy(env):
    obs, info = env.reset(options={"task_id": "3", "split": "test"})
    assert info["task"] in obs and info["admissible_actions"] == [SEARCH_TEMPLATE]
    product = env.catalogue.by_asin[env.engine.s.goal.asin]
    env.step(f"search[{product.title}]")
    env.step(f"click[{product.asin}]")
    obs, reward, term, trunc, info = env.step("click[buy now]")  # no options chosen: partial credit
    r = info["reward_info"]
    assert term and not trunc and reward == info["score"] == r["reward"] and 0 < reward < 1
    assert info["raw_score"] == pytest.approx(100 * reward) and info["won"] is False
    obs, reward, term, trunc, info = env.step("click[buy now]")
    assert info["action_valid"] is False and reward == 0.0 and obs.startswith("Invalid action:")


def test_env_invalid_action_is_answered_with_the_page(env):
    obs0, _ = env.reset(seed=1)
    obs, reward, term, trunc, info = env.step("click[buy now]")
    assert obs.startswith("Invalid action: 'buy now' is not clickable: this page has only the search bar")
    assert obs.endswith(obs0)
    assert info["action_valid"] is False and reward == 0 and not term


def test_env_truncates_at_15_steps(env):
    env.reset(seed=2)
    for i in range(15):
        *_, term, trunc, info = env.step("click[nothing]")
    assert trunc and not term and info["step"] == 15


def test_env_task_ids_and_splits(env):
    assert [len(env.tasks(s)) for s in ("test", "valid", "train")] == [500, 1000, 1500]
    assert env.tasks("valid")[0] == "500"
    with pytest.raises(ValueError, match="belongs to split 'valid'"):
        env.reset(options={"task_id": "600"})
    with pytest.raises(ValueError, match="goal indices"):
        env.reset(options={"task_id": "99999", "split": "train"})
    _, info = env.reset(options={"task_id": "600", "split": "valid"})
    assert info["split"] == "valid" and info["task"] == env.catalogue.goals[600].instruction_text


def test_official_fixture_env_conforms(tmp_path, monkeypatch):
    import madopd_envs.webshop.env as webshop_env

    monkeypatch.setattr(webshop_env, "_SHOPS", {})  # an earlier test's memoised shop would skip the disk cache
    env = WebShopEnv(str(FIXTURE), index_cache=tmp_path, max_episode_steps=15)
    assert env.tasks("test") == ["0", "1", "2", "3", "4"] and env.tasks("train") == []
    check_text_env(env)
    assert len(list(tmp_path.iterdir())) == 1  # the index was cached on disk


def test_index_cache_is_reused(shop, tmp_path, monkeypatch):
    catalogue, fresh = shop
    first = _cached_index(catalogue, tmp_path)
    monkeypatch.setattr(SearchIndex, "build", lambda products: pytest.fail("rebuilt despite the cache"))
    again = _cached_index(catalogue, tmp_path)
    for query in ("citrus deodorant", "speaker", "boots brown", "mango"):
        assert again.search(query) == first.search(query) == fresh.search(query)
    monkeypatch.undo()
    monkeypatch.setenv("MADOPD_CACHE", str(tmp_path / "elsewhere"))
    _cached_index(catalogue, None)  # the default location follows $MADOPD_CACHE at call time
    assert (tmp_path / "elsewhere" / "webshop-index").is_dir()
