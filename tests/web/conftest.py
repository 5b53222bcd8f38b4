"""Fixtures of the web UI's browser tests (real ``neurolake serve`` processes, real headless Chromium).

- ``ui_lake_path`` (session, **read-only**): the full demo lake — a copy of ``demo_lake_path`` (the image
  layers) completed by :func:`neurolake.demo.run_demo` (proofreading, synapses, the connectomes
  ``pinky100`` and ``celegans``, materialization versions, a saved SQL run); to iterate on the tests,
  ``NEUROLAKE_TEST_UI_LAKE=<a lake built by build_ui_lake>`` copies that lake instead of building one;
- ``ui_server`` (session): ``neurolake serve`` on that lake, base URL;
- ``ui_auth_server`` (session): ``neurolake serve --auth`` on a copy of that lake with one more datastack
  ``private_ds`` (private, no role for anyone); user ``viewer`` has role viewer and ``editor`` role editor
  on ``celegans`` and ``gerhard2013``;
  returns ``(base_url, {"viewer": token, "editor": token})``;
- ``browser`` (session): one headless Chromium (the system's ``/usr/bin/chromium``) driven by Playwright;
- ``open_page``: a factory ``open_page(url, **context_options) -> Watched``: a new browser context and page
  that records console errors, uncaught page errors, failed requests and answers >= 400
  (``watched.assert_clean(allow=...)``); contexts close after the test.

Browser tests are marked ``browser``; they fail (not skip) when Chromium is missing: run scripts/setup.sh.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS_UI = ROOT / "docs" / "ui"
CHROMIUM = Path("/usr/bin/chromium")
VIEWPORT = {"width": 1280, "height": 800}
PRIVATE_DS = "private_ds"


def build_ui_lake(path: Path, say=lambda m: None) -> Path:
    """Complete the lake at ``path`` (which may already hold the demo layers) into the full demo lake;
    returns ``path``. Falls back to ``examples/_data.py``'s builders if the demo lacks the connectomes."""
    from neurolake import open_lake
    from neurolake.demo import run_demo

    lake = open_lake(path, create=True)
    try:
        run_demo(lake, say, scheduler="threads")
        if "celegans" not in lake or "pinky100" not in lake:  # the demo step of issue 13 is missing
            import importlib.util

            spec = importlib.util.spec_from_file_location("_nl_examples_data", ROOT / "examples" / "_data.py")
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
            mod.ensure_pinky(lake)
            mod.ensure_celegans(lake)
        register_degree_features(lake, path.parent / "features")
    finally:
        lake.close()
    return path


FEATURE = "celegans_degree"


def celegans_degree_frame():
    """Per-neuron chemical in/out degree and synapse counts of the C. elegans source (Varshney et al. 2011,
    presynaptic S/Sp rows; names upper-cased), computed with pandas: neuron, in_degree, out_degree,
    in_synapses, out_synapses."""
    import pandas as pd

    w = pd.read_csv(ROOT / "data" / "celegans" / "NeuronConnect.csv", dtype={"Neuron 1": str, "Neuron 2": str})
    s = w[w["Type"].isin(["S", "Sp"])].assign(pre=lambda d: d["Neuron 1"].str.upper(),
                                              post=lambda d: d["Neuron 2"].str.upper())
    pairs = s.groupby(["pre", "post"])["Nbr"].sum().reset_index()
    out = pairs.groupby("pre").agg(out_degree=("post", "size"), out_synapses=("Nbr", "sum"))
    inn = pairs.groupby("post").agg(in_degree=("pre", "size"), in_synapses=("Nbr", "sum"))
    df = out.join(inn, how="outer").fillna(0).astype("int64").rename_axis("neuron").reset_index()
    return df[["neuron", "in_degree", "out_degree", "in_synapses", "out_synapses"]]


def register_degree_features(lake, folder: Path) -> None:
    """Register ``celegans_degree`` (a Parquet file of :func:`celegans_degree_frame`) in the feature registry
    of datastack ``celegans``, aligned with version 1, so the features pages have a real entry."""
    from neurolake.catalog.registry import FeatureRegistry

    reg = FeatureRegistry(lake)
    if any(e["name"] == FEATURE for e in reg.search(datastack="celegans")):
        return
    folder.mkdir(parents=True, exist_ok=True)
    loc = folder / f"{FEATURE}.parquet"
    celegans_degree_frame().to_parquet(loc, index=False)
    reg.register(name=FEATURE, datastack="celegans", location=str(loc), format="parquet",
                 description="chemical in/out degree and synapse counts per C. elegans neuron (Varshney et al. 2011)",
                 materialization_version=1, tags=["connectome", "degree"], owner_team="web tests",
                 column_descriptions={"neuron": "neuron name", "in_degree": "presynaptic partners"},
                 status="published")


@pytest.fixture(scope="session")
def ui_lake_path(request, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ui") / "lake"
    prebuilt = os.environ.get("NEUROLAKE_TEST_UI_LAKE")  # for iterating on the tests: a lake built before
    shutil.copytree(prebuilt or request.getfixturevalue("demo_lake_path"), path)
    return build_ui_lake(path)


@pytest.fixture(scope="session")
def ui_server(serve_lake, ui_lake_path) -> str:
    return serve_lake(ui_lake_path)


@pytest.fixture(scope="session")
def ui_auth_server(serve_lake, ui_lake_path, tmp_path_factory) -> tuple[str, dict[str, str]]:
    from neurolake import open_lake

    path = tmp_path_factory.mktemp("ui-auth") / "lake"
    shutil.copytree(ui_lake_path, path)
    lake = open_lake(path)
    try:
        lake.create_datastack(PRIVATE_DS, (8, 8, 8), description="private: no role for viewer/editor",
                              public=False)
        acc = lake.access
        tokens = {}
        for user, role in (("viewer", "viewer"), ("editor", "editor")):
            acc.add_user(user)
            for ds in ("celegans", "gerhard2013"):
                acc.grant(user, ds, role)
            tokens[user] = acc.create_token(user)["token"]
    finally:
        lake.close()
    return serve_lake(path, "--auth"), tokens


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium through Playwright's sync API, per module: while it is open, Playwright's event loop is
    the running loop of this thread, so any other test here calling ``asyncio.run`` would fail (with pytest-xdist
    a session-wide browser broke tests of unrelated modules run later by the same worker)."""
    if not CHROMIUM.exists():
        pytest.fail("/usr/bin/chromium is missing: run scripts/setup.sh")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                              args=["--no-sandbox", "--no-proxy-server", "--disable-dev-shm-usage",
                                    "--disable-background-networking", "--disable-component-update"])
        yield b
        b.close()


@dataclass
class Watched:
    """A page with the problems the browser saw: ``errors`` (console errors, uncaught exceptions),
    ``failed`` (requests that failed to complete) and ``bad`` (answers with status >= 400)."""

    context: object
    page: object
    errors: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    bad: list[tuple[int, str]] = field(default_factory=list)
    pending: dict = field(default_factory=dict)  # request -> monotonic time it started
    last_activity: float = 0.0

    def assert_clean(self, allow: tuple[str, ...] = ()) -> None:
        """No console error, no page error, no failed request, no answer >= 400 (except URLs containing
        one of ``allow``; the browser logs a console error for each such answer, which is allowed too)."""
        bad = [(s, u) for s, u in self.bad if not any(a in u for a in allow)]
        # the browser logs "Failed to load resource" for each failed or >= 400 answer: those are judged by URL
        errors = [e for e in self.errors if not e.startswith("Failed to load resource")]
        assert not errors, f"console/page errors on {self.page.url}: {errors}"
        assert not self.failed, f"failed requests on {self.page.url}: {self.failed}"
        assert not bad, f"answers >= 400 on {self.page.url}: {bad}"

    def go(self, url: str):
        """Open ``url`` in this page and wait until the network is idle (lazy images and scripts loaded, so
        leaving the page aborts nothing); returns the main response."""
        r = self.page.goto(url, wait_until="load")
        self.settle()
        return r

    def settle(self, quiet_s: float = 0.5, timeout_s: float = 30.0) -> None:
        """Wait until no request has been open for ``quiet_s`` seconds (Chromium's own "networkidle" event
        is sometimes never sent); fail naming the requests still open after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.pending and time.monotonic() - self.last_activity >= quiet_s:
                return
            self.page.wait_for_timeout(100)
        raise AssertionError(f"requests still open after {timeout_s} s on {self.page.url}: "
                             f"{[r.url for r in self.pending]}")

    def plots(self) -> list[int]:
        """Trace counts of the drawn Plotly plots on the page (one entry per ``.js-plotly-plot``)."""
        return self.page.evaluate(
            "Array.from(document.querySelectorAll('.js-plotly-plot')).map(e => (e.data || []).length)")

    def screenshot(self, name: str, jpeg: bool = False, at: str | None = None) -> Path:
        """Save the viewport (1280 x 800) to ``docs/ui/<name>.png`` (``.jpg``, quality 70, for photographic
        pages such as EM images, to keep the file small); scrolled to the top, or to element ``at``."""
        DOCS_UI.mkdir(parents=True, exist_ok=True)
        out = DOCS_UI / f"{name}.{'jpg' if jpeg else 'png'}"
        if at is None:
            self.page.evaluate("window.scrollTo(0, 0)")
        else:
            self.page.locator(at).first.evaluate(  # below the page's sticky header
                "e => window.scrollTo(0, e.getBoundingClientRect().top + window.scrollY - 64)")
            self.page.wait_for_timeout(300)
        if jpeg:
            self.page.screenshot(path=str(out), full_page=False, type="jpeg", quality=70)
        else:
            self.page.screenshot(path=str(out), full_page=False)
        return out


@pytest.fixture
def open_page(browser):
    contexts = []

    def open_(url: str | None = None, *, token: str | None = None, **options) -> Watched:
        ctx = browser.new_context(viewport=VIEWPORT, **options)
        contexts.append(ctx)
        if token is not None:
            from urllib.parse import urlsplit

            host = urlsplit(url).hostname if url else "127.0.0.1"
            ctx.add_cookies([{"name": "neurolake_token", "value": token, "domain": host, "path": "/"}])
        pg = ctx.new_page()
        w = Watched(ctx, pg)
        pg.on("console", lambda m: w.errors.append(m.text) if m.type == "error" else None)
        pg.on("pageerror", lambda e: w.errors.append(f"pageerror: {e}"))
        pg.on("requestfailed", lambda r: w.failed.append(f"{r.method} {r.url}: {r.failure}"))

        def started(r):
            w.pending[r] = w.last_activity = time.monotonic()

        def ended(r):
            w.pending.pop(r, None)
            w.last_activity = time.monotonic()

        pg.on("request", started)
        pg.on("requestfinished", ended)
        pg.on("requestfailed", ended)
        pg.on("response", lambda r: w.bad.append((r.status, r.url)) if r.status >= 400 else None)
        if url is not None:
            w.go(url)
        return w

    yield open_
    for c in contexts:
        c.close()
