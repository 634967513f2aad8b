"""The HTML report, checked in a real headless Chromium (Debian's ``chromium``, installed by ``make setup``).

The page is loaded at 1400 px with a probe script added first in ``<head>``; after ``load`` it writes what
it measured into the DOM, which ``--dump-dom`` prints: horizontal overflow of the page and of every
element past the column, images that did not load, ids broken over two lines, console errors.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from madopd_envs.eval.report import board_figure, load_store, main as report_main
from madopd_envs.eval.results import summarize

PROBE = """<script>
window.__errors = [];
window.addEventListener('error', e => __errors.push(String(e.message || ('failed to load ' + e.target.tagName))), true);
const __ce = console.error;
console.error = (...a) => { __errors.push(a.map(String).join(' ')); __ce(...a); };
window.addEventListener('load', () => {
  const body = document.body, de = document.documentElement;
  const right = body.getBoundingClientRect().right - parseFloat(getComputedStyle(body).paddingRight);
  const over = [...body.querySelectorAll('*')].filter(el => el.getBoundingClientRect().right > right + 0.5)
    .map(el => el.tagName + '.' + el.className + ' ' + Math.round(el.getBoundingClientRect().right));
  const imgs = [...document.images].map(i => ({loaded: i.complete && i.naturalWidth > 0, natural: i.naturalWidth}));
  const wrapped = [...document.querySelectorAll('td.id')].filter(td => {
    const r = document.createRange(); r.selectNodeContents(td); return r.getClientRects().length > 1; })
    .map(td => td.textContent);
  const pre = document.createElement('pre'); pre.id = 'probe';
  pre.textContent = JSON.stringify({pageOverflow: de.scrollWidth - de.clientWidth, column: Math.round(right -
    body.getBoundingClientRect().left), over, imgs, wrapped, errors: __errors, text: body.innerText});
  body.appendChild(pre);
});
</script>"""


def chromium() -> str:
    """Debian's chromium; skip only where it truly cannot be installed, never on CI."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    if os.environ.get("CI"):
        pytest.fail("chromium is missing on CI: `make setup` installs Debian's chromium (apt-get install chromium)")
    if os.geteuid() == 0 and shutil.which("apt-get"):
        pytest.fail("chromium is not installed but can be: run `make setup` (it installs Debian's chromium)")
    pytest.skip("chromium is not installed and cannot be installed here (needs root and apt-get): "
                "install Debian's chromium to run the browser test")


def _summary(agent: str, board: str, envs: list[str], won: bool, errored: bool = False) -> dict:
    recs = [{"key": f"{e}|test|{k}|0", "env": e, "split": "test", "task_id": str(k), "seed": 0, "agent": agent,
             "family": "f", "won": won, "score": float(won), "raw_score": 0.0, "steps": 3, "invalid_actions": 1,
             "invalid_format": 0, "completion_tokens": 5, "task_type": None,
             "error": "step 1: worker died" if errored else None} for e in envs for k in range(2)]
    return summarize(recs, agent=agent, leaderboard=board, planned=len(recs), versions={"harness": "madopd 0.1"})


def _store(root: Path) -> Path:
    """A store shaped like the committed results: a wide ``twx`` board, a ``default`` one with an all-errored
    run, long agent names, and one corrupt ``summary.json``."""
    twx = [f"madopd/TWX-{n}-v0" for n in ("CookingWorld", "TWC", "Coin", "MapReader", "Arithmetic", "Sorting",
                                          "SimonSays", "PeckingOrder")]
    default = ["madopd/ALFWorld-v0", "madopd/CodeHumanEval-v0", "madopd/TWX-Coin-v0", "madopd/TWX-SimonSays-v0",
               "madopd/WebShop-v0", "madopd/ScienceWorld-v0"]
    runs = [("twx", "expert", twx, True, False), ("twx", "random", twx, False, False),
            ("default", "expert", default, True, False), ("default", "random", default, False, False),
            ("default", "smollm2-135m-instruct-distilled", default, False, True)]
    for board, agent, envs, won, errored in runs:
        d = root / board / agent
        d.mkdir(parents=True)
        (d / "summary.json").write_text(json.dumps(_summary(agent, board, envs, won, errored)))
        (d / "run.json").write_text(json.dumps({"command": f"python -m madopd_envs.eval --agent {agent} "
                                                           f"--leaderboard {board} --output {d} --resume"}))
    (root / "default" / "broken").mkdir()
    (root / "default" / "broken" / "summary.json").write_bytes(b'{"agent": "broken", "overall": {"succ\xe6')
    return root


def test_report_renders_cleanly_in_headless_chromium(tmp_path, capsys):
    browser = chromium()
    store = _store(tmp_path / "store")
    assert report_main(["--store", str(store)]) == 0  # a corrupt summary is skipped, not a crash
    assert "warning: skipped" in capsys.readouterr().err
    page = (store / "index.html").read_text(encoding="utf-8")
    probe = store / "probe.html"
    probe.write_text(page.replace("<head>", "<head>" + PROBE, 1), encoding="utf-8")
    r = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        "--window-size=1400,1000", "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
                       capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="probe">(.*?)</pre>', r.stdout, re.S)
    assert found, f"chromium gave no probe result (rc {r.returncode}): {r.stderr[-2000:]}"
    import html

    m = json.loads(html.unescape(found.group(1)))
    assert m["pageOverflow"] <= 0 and not m["over"], m["over"]  # nothing wider than the column
    assert len(m["imgs"]) == 2 and all(i["loaded"] for i in m["imgs"])  # both charts load...
    assert all(i["natural"] <= m["column"] for i in m["imgs"]), (m["imgs"], m["column"])  # ...at full size
    assert not m["wrapped"], m["wrapped"]  # no id broken mid-word
    assert not m["errors"], m["errors"]
    assert "None" not in m["text"] and "nan" not in m["text"]  # an all-errored run shows '-', as markdown does
    assert "smollm2-135m-instruct-distilled" in m["text"] and "skipped" in m["text"]


def test_chart_legend_is_whole_and_off_the_bars():
    boards = {"twx": [_summary(a, "twx", [f"madopd/TWX-Game{i}-v0" for i in range(8)], w)
                      for a, w in (("expert", True), ("random", False), ("random-admissible-long-name", False))]}
    fig = board_figure("twx", boards["twx"])
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    legend = ax.get_legend().get_window_extent(renderer)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["expert", "random", "random-admissible-long-name"]
    assert not legend.overlaps(ax.get_window_extent(renderer))  # beside the axes: over no bar
    tight = fig.get_tightbbox(renderer)  # what savefig(bbox_inches="tight") keeps
    assert tight.x0 <= legend.x0 / fig.dpi and legend.x1 / fig.dpi <= tight.x1  # not cut
    assert tight.width * 110 <= 1300  # the saved chart fits the page column at its own size


def test_corrupt_or_foreign_summaries_are_skipped_and_named(tmp_path, capsys):
    store = _store(tmp_path / "store")
    (store / "twx" / "other").mkdir()
    (store / "twx" / "other" / "summary.json").write_text('{"hello": "world"}')
    skipped: list[str] = []
    boards = load_store(store, skipped)
    assert sorted(len(v) for v in boards.values()) == [2, 3] and len(skipped) == 2
    assert any("broken" in s and "UnicodeDecodeError" in s or "JSONDecodeError" in s for s in skipped)
    for board in ("twx", "default"):
        for d in (store / board).iterdir():
            (d / "summary.json").write_text("{")
    assert report_main(["--store", str(store)]) == 2
    assert "no readable" in capsys.readouterr().err
