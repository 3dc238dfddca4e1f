"""The feature browser, in a real headless Chromium driven over the DevTools protocol (no Playwright):
the list renders every feature, search filters, a click shows the examples with the marked token, the
keyboard moves the selection, 24,576 features render. Screenshots go to test-artifacts/."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sae_core.errors import ReportError
from sae_core.naming import Cell
from sae_core.report.browser import write_browser
from tests.report.test_report_data import fabricate_cell

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


class Chromium:
    """One headless Chromium process (its own process group) and a DevTools websocket to its page."""

    def __init__(self, profile: Path) -> None:
        from websockets.sync.client import connect

        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--no-first-run", "--no-default-browser-check", "--window-size=1400,900",
             f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        try:
            port_file = profile / "DevToolsActivePort"  # Chromium writes its chosen port here
            deadline = time.monotonic() + 60
            while not (port_file.is_file() and port_file.read_text().strip()):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"chromium did not start (exit code {self.proc.poll()})")
                time.sleep(0.1)
            port = int(port_file.read_text().split()[0])
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as resp:
                targets = json.load(resp)
            page = next(t for t in targets if t["type"] == "page")
            self.ws = connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=20)
        except BaseException:
            self.close()
            raise
        self._id = 0

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=60))
            if message.get("id") == self._id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def js(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"JS error in {expression!r}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, path: Path, fragment: str = "") -> None:
        # Through about:blank, so that every open is a fresh load of the page: Page.navigate returns
        # before the new document commits (a check could pass on the old one), and a change of the
        # fragment alone would not reload it at all. (The page rewrites its own fragment, hence the split.)
        url = path.resolve().as_uri() + fragment
        for target, ready in (
            ("about:blank", "location.href === 'about:blank'"),
            (url, f"location.href.split('#')[0] === {json.dumps(url.split('#')[0])}"
                  " && document.readyState === 'complete' && !!window.saeBrowser"),
        ):  # fmt: skip
            self.send("Page.navigate", url=target)
            self.wait_for(ready, timeout=60)

    def wait_for(self, expression: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.js(expression):
            if time.monotonic() > deadline:
                where = self.js("[location.href, (document.querySelector('#panel h2') || {}).textContent]")
                raise AssertionError(f"timed out waiting for {expression} (page: {where})")
            time.sleep(0.05)

    def key(self, key: str, code: str, key_code: int, text: str | None = None) -> None:
        extra = {"text": text} if text else {}
        self.send("Input.dispatchKeyEvent", type="keyDown", key=key, code=code,
                  windowsVirtualKeyCode=key_code, **extra)  # fmt: skip
        self.send("Input.dispatchKeyEvent", type="keyUp", key=key, code=code, windowsVirtualKeyCode=key_code)

    def type_text(self, text: str) -> None:
        self.send("Input.insertText", text=text)

    def click(self, selector: str) -> None:
        # Scrolled into view first (a mouse event outside the viewport hits nothing), then two frames
        # let pass: a scroll redraws the virtualised list on the next frame, and a press and a release
        # that land on different elements are no click.
        box = self.js(
            f"(async () => {{ let e = document.querySelector({json.dumps(selector)});"
            " e.scrollIntoView({block: 'center'});"
            " for (let k = 0; k < 2; k++) await new Promise((done) => requestAnimationFrame(done));"
            f" e = document.querySelector({json.dumps(selector)}); const r = e.getBoundingClientRect();"
            " const x = r.x + r.width / 2, y = r.y + r.height / 2;"
            " const hit = document.elementFromPoint(x, y);"
            " return [x, y, hit === e || e.contains(hit)]; })()"
        )
        assert box[2], f"{selector} is covered or outside the page at {box[:2]}"
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        data = self.send("Page.captureScreenshot", format="png")["data"]
        path = ARTIFACTS / name
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        ws = getattr(self, "ws", None)
        if ws is not None:
            ws.close()
        if self.proc.poll() is None:  # the whole group: the browser and the helpers it forked
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


ALL_ROW_IDS = """(async () => {
  // Scroll the virtualised list from top to bottom, collecting the ids of the rows it renders.
  const list = document.getElementById("list"), seen = new Set();
  list.scrollTop = 0;
  for (;;) {
    list.dispatchEvent(new Event("scroll"));
    await new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)));
    document.querySelectorAll("#list .row").forEach((row) => seen.add(Number(row.dataset.id)));
    if (list.scrollTop + list.clientHeight >= list.scrollHeight - 1) break;
    list.scrollTop += list.clientHeight;
  }
  list.scrollTop = 0;
  return [...seen].sort((a, b) => a - b).map(String);
})()"""


FIRST_ROW_ID = """(async () => {
  const list = document.getElementById("list");
  list.scrollTop = 0;
  list.dispatchEvent(new Event("scroll"));
  await new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)));
  return document.querySelector("#list .row[data-pos='0']").dataset.id;
})()"""


LAST_ROW_IDS = """(async () => {
  const list = document.getElementById("list");
  list.scrollTop = list.scrollHeight;
  list.dispatchEvent(new Event("scroll"));
  await new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)));
  return [...document.querySelectorAll("#list .row")].map((row) => Number(row.dataset.id));
})()"""


@pytest.fixture(scope="module")
def chromium(tmp_path_factory):
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (apt-get install -y chromium); the browser page is untested")
    browser = Chromium(tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield browser
    finally:
        browser.close()


@pytest.fixture(scope="module")
def small_page(tmp_path_factory):
    run = fabricate_cell(tmp_path_factory.mktemp("sweep"), Cell(4, 0.0001, "sampling"), seed=3)
    return run, write_browser(run)


def _embedded(page: Path) -> dict[str, Any]:
    text = page.read_text()
    raw = re.search(r'<script type="application/json" id="sae-data">(.*?)</script>', text, re.S).group(1)
    return json.loads(raw)


def test_page_is_self_contained_and_escapes_its_data(tmp_path):
    import pyarrow.parquet as pq

    run = fabricate_cell(tmp_path, Cell(2, 0.01, "nosampling"))
    table = pq.read_table(run / "labels.parquet").to_pandas()
    table.loc[0, "label"] = "</script><script>alert(1)</script>"
    table.to_parquet(run / "labels.parquet")
    page = write_browser(run)
    text = page.read_text()
    assert text.count("</script>") == 3  # data, every feature's examples, code: a label can end none
    assert not re.search(r"""(src|href)=['"]?(https?:)?//""", text)  # no CDN, no network
    data = _embedded(page)
    assert data["labels"][str(table.loc[0, "feature_id"])]["label"].startswith("</script>")
    assert len(data["f"]["id"]) == 32 and data["cell"] == "2x_0.01_nosampling"


def test_missing_analysis_is_a_clear_error(tmp_path):
    run = fabricate_cell(tmp_path, Cell(2, 0.01, "nosampling"), with_analysis=False)
    with pytest.raises(ReportError, match=r"feature_stats\.parquet"):
        write_browser(run)
    with pytest.raises(ReportError, match="no such directory"):
        write_browser(tmp_path / "nope")


def _examples_block(page: Path) -> dict[str, Any]:
    text = page.read_text()
    raw = re.search(r'<script type="application/json" id="sae-examples">(.*?)</script>', text, re.S).group(1)
    return json.loads(raw)


def test_every_alive_feature_carries_its_examples_compactly(small_page):
    """Was: examples for the selected features only; the page said "No examples" for all others."""
    import pyarrow.parquet as pq

    run, page = small_page
    data, every = _embedded(page), _examples_block(page)
    stats = pq.read_table(run / "features" / "feature_stats.parquet").to_pandas()
    alive = {str(f) for f in stats.feature_id[~stats.dead]}
    assert set(every["ax"]) | set(data["examples"]) == alive
    assert not set(every["ax"]) & set(data["examples"])  # the selected ones once, with quantiles
    top = pq.read_table(run / "features" / "top_examples.parquet").to_pandas()
    fid = sorted(every["ax"], key=int)[0]
    rows = top[top.feature_id == int(fid)].sort_values("rank")
    parsed = [part.split(" ") for part in every["ax"][fid].split("|")]
    assert [(int(d), int(p)) for _, d, p in parsed] == list(zip(rows.doc_id, rows.pos, strict=True))
    assert data["dup"] and all(str(v) in data["groups"] for v in data["dup"].values())


@pytest.mark.integration
def test_browser_shows_every_features_examples_and_duplicates(chromium, small_page):
    _, page = small_page
    data, every = _embedded(page), _examples_block(page)
    chromium.open(page)
    fid = sorted(every["ax"], key=int)[0]  # not a selected feature
    chromium.open(page, f"#f={fid}")
    chromium.wait_for(f"document.querySelector('#panel h2').textContent.startsWith('Feature {fid}')")
    marks = chromium.js("[...document.querySelectorAll('#examples-top mark')].map(m => m.textContent)")
    parsed = [part.split(" ") for part in every["ax"][fid].split("|")]
    docs, vocab = every["docs"], every["vocab"]
    assert marks == [vocab[docs[d][int(p)]].replace("\n", "↵") for _, d, p in parsed]
    chromium.screenshot("browser-unselected-feature.png")
    dead = next(str(f) for f, d in zip(data["f"]["id"], data["f"]["dead"], strict=True) if d)
    chromium.open(page, f"#f={dead}")
    chromium.wait_for(f"document.querySelector('#panel h2').textContent.startsWith('Feature {dead}')")
    assert "never fired" in chromium.js("document.getElementById('examples-top').textContent")
    twin, first = next(iter(data["dup"].items()))
    chromium.open(page, f"#f={twin}")
    chromium.wait_for(f"document.querySelector('#panel h2').textContent.startsWith('Feature {twin}')")
    assert f"near-duplicate of #{first}" in chromium.js("document.getElementById('duplicate').textContent")
    chromium.screenshot("browser-duplicate.png")


@pytest.mark.integration
def test_browser_list_search_click_and_keyboard(chromium, small_page):
    _, page = small_page
    data = _embedded(page)
    chromium.open(page)
    assert chromium.js("document.getElementById('match-count').textContent") == "64 features"
    assert chromium.js(ALL_ROW_IDS) == [str(i) for i in sorted(data["f"]["id"])]

    labelled = [fid for fid, lab in data["labels"].items() if "Washington" in lab["label"]]
    chromium.click("#search")
    chromium.type_text("washington")
    assert (
        chromium.js("document.getElementById('match-count').textContent") == f"{len(labelled)} of 64 features"
    )
    shown = chromium.js("[...document.querySelectorAll('#list .row')].map(r => r.dataset.id)")
    assert sorted(shown) == sorted(labelled)

    target = labelled[0]
    chromium.click(f"#list .row[data-id='{target}']")
    chromium.wait_for(f"document.querySelector('#panel h2').textContent.startsWith('Feature {target}')")
    assert "Washington" in chromium.js("document.getElementById('feature-label').textContent")
    marks = chromium.js(
        "[...document.querySelectorAll('#examples-top mark, #examples-quantile mark')]"
        ".map(m => [m.textContent, Number(m.dataset.activation), getComputedStyle(m).backgroundColor])"
    )
    expected = [e for e in data["examples"][target]]
    assert len(marks) == len(expected) > 0
    assert all(text == " Washington" for text, _, _ in marks)
    # rgba(255, 120, 0, a); at full strength the browser reports rgb(255, 120, 0).
    alphas = [float([*re.findall(r"[\d.]+", color), "1"][3]) for _, _, color in marks]
    acts = [act for _, act, _ in marks]
    top = max(range(len(acts)), key=acts.__getitem__)
    low = min(range(len(acts)), key=acts.__getitem__)
    assert alphas[top] > alphas[low]  # highlighted in proportion to the activation
    chromium.screenshot("browser-feature.png")

    # A correlated feature is a link that opens it.
    chromium.click("#correlated a.fid")
    other = data["corr"][target][0][0]
    chromium.wait_for(f"document.querySelector('#panel h2').textContent.startsWith('Feature {other}')")

    # Keyboard: / focuses the search, Escape leaves it, ↓ moves to the next row of the list.
    chromium.js("document.activeElement.blur()")
    chromium.key("/", "Slash", 191, text="/")
    assert chromium.js("document.activeElement.id") == "search"
    chromium.js("document.getElementById('search').value = ''; "
                "document.getElementById('search').dispatchEvent(new Event('input'))")  # fmt: skip
    chromium.key("Escape", "Escape", 27)
    first = chromium.js(
        "window.saeBrowser.state.view.length && document.querySelector('#list .row.current').dataset.id"
    )
    chromium.key("ArrowDown", "ArrowDown", 40)
    second = chromium.js("document.querySelector('#list .row.current').dataset.id")
    assert second != first
    chromium.wait_for(f"document.querySelector('#panel h2').textContent.startsWith('Feature {second}')")
    chromium.key("ArrowUp", "ArrowUp", 38)
    chromium.wait_for(f"document.querySelector('#list .row.current').dataset.id === '{first}'")

    # Filters: hiding dead features leaves the alive ones.
    chromium.click("#hide-dead")
    alive = len(data["f"]["id"]) - sum(data["f"]["dead"])
    chromium.wait_for(f"document.getElementById('match-count').textContent === '{alive} of 64 features'")
    chromium.click("#hide-dead")

    # Sorting by id, descending after a second click.
    chromium.click("#list-head span[data-sort='id']")
    chromium.click("#list-head span[data-sort='id']")
    assert chromium.js(FIRST_ROW_ID) == "63"


@pytest.mark.integration
def test_browser_renders_24576_features(chromium, tmp_path):
    run = fabricate_cell(tmp_path, Cell(32, 0.0001, "sampling"), n_features=24_576, seed=5)
    page = write_browser(run)
    chromium.open(page)
    assert chromium.js("document.getElementById('match-count').textContent") == "24576 features"
    rendered = chromium.js("document.querySelectorAll('#list .row').length")
    assert 0 < rendered < 200  # virtualised: only the rows in view exist
    chromium.click("#list-head span[data-sort='id']")  # ascending ids
    ids = chromium.js(LAST_ROW_IDS)
    assert max(ids) == 24_575
    chromium.click("#search")
    chromium.type_text("24575")
    assert chromium.js("document.getElementById('match-count').textContent") == "1 of 24576 features"
    chromium.key("Enter", "Enter", 13, text="\r")
    chromium.wait_for("document.querySelector('#panel h2').textContent.startsWith('Feature 24575')")
    chromium.screenshot("browser-24576.png")
    chromium.open(page, "#f=12345")  # a link to one feature opens it
    chromium.wait_for("document.querySelector('#panel h2').textContent.startsWith('Feature 12345')")


@pytest.mark.integration
def test_histogram_axis_fits_the_features_activations(chromium, tmp_path):
    """The bins span the analysis's range (0.07 to 1e3, log-spaced); a feature firing between ~0.5 and
    ~4 filled a third of the plot, the axis labelled 0.07 and 1000 whatever the feature."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sae_core.analysis.feature_stats import HIST_BINS, histogram_edges

    run = fabricate_cell(tmp_path, Cell(2, 0.01, "sampling"), seed=7)
    edges = histogram_edges(0.07)
    stats = pq.read_table(run / "features" / "feature_stats.parquet")
    lo, hi = np.searchsorted(edges, 0.5), np.searchsorted(edges, 4.0)
    narrow = [
        [7 if lo <= b < hi and not dead else 0 for b in range(HIST_BINS)]
        for dead in stats["dead"].to_pylist()
    ]
    stats = stats.set_column(
        stats.schema.get_field_index("hist"), "hist", pa.array(narrow, pa.list_(pa.int64()))
    )
    pq.write_table(stats, run / "features" / "feature_stats.parquet")
    analysis = json.loads((run / "analysis.json").read_text())
    (run / "analysis.json").write_text(json.dumps({**analysis, "histogram_edges": edges.tolist()}))
    page = write_browser(run)
    feature = next(i for i, dead in enumerate(stats["dead"].to_pylist()) if not dead)
    chromium.open(page, f"#f={feature}")
    chromium.wait_for(f"document.querySelector('#panel h2').textContent.startsWith('Feature {feature}')")
    bars = chromium.js(
        "[...document.querySelectorAll('#histogram rect')].map(r => [Number(r.getAttribute('x')),"
        " Number(r.getAttribute('width')), Number(r.getAttribute('height'))])"
    )
    width = chromium.js("Number(document.getElementById('histogram').getAttribute('width'))")
    filled = [(x, w) for x, w, h in bars if h > 0]
    assert min(x for x, _ in filled) < 0.15 * width and max(x + w for x, w in filled) > 0.85 * width
    ticks = [
        float(t)
        for t in chromium.js("[...document.querySelectorAll('#histogram text')].map(t => t.textContent)")
    ]
    assert 0.3 < ticks[0] < 0.5 and 4.0 < ticks[-1] < 6.0, ticks
    chromium.js("document.getElementById('histogram').scrollIntoView()")
    chromium.screenshot("browser-histogram.png")
