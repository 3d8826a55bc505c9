"""The documentation site, opened in a real browser: math rendered, links resolved, images loaded.

The site is the one ``bash .ci/run`` builds into ``docs/_build/html`` (``NUMPY_RNN_DOCS_HTML``
points elsewhere). When it is not there and Sphinx is installed (the ``docs`` extra), the test
session builds it once into a temporary folder, with warnings as errors. Every page is opened in
headless Chromium (Debian's ``chromium`` package), driven over the DevTools protocol through a
pipe, with every host name unresolvable: the site must work offline, so MathJax has to come from
the site itself. The test skips, saying why, where Chromium or Sphinx is missing, unless
``NUMPY_RNN_REQUIRE_BROWSER=1`` (set by .ci/run where it could install Chromium), which turns that
skip into a failure. ``NUMPY_RNN_DOCS_SCREENSHOTS=DIR`` also saves a full-page screenshot of
each page there.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
REQUIRED = os.environ.get("NUMPY_RNN_REQUIRE_BROWSER") == "1"
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")

# What a page reports about itself, once MathJax has typeset and every image has settled.
PAGE_REPORT = r"""
(async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    await MathJax.startup.promise;
  }
  const images = Array.from(document.images);
  await Promise.all(images.map(img => img.complete ? null : new Promise(done => {
    img.addEventListener('load', done);
    img.addEventListener('error', done);
  })));
  const prose = document.body.cloneNode(true);
  prose.querySelectorAll('pre, code, script, style').forEach(e => e.remove());
  const text = prose.innerText || prose.textContent;
  const math = Array.from(document.querySelectorAll('.math'));
  return {
    mathjax: !!(window.MathJax && MathJax.version),
    math: math.length,
    typeset: math.filter(m => m.querySelector('mjx-container')).length,
    containers: document.querySelectorAll('mjx-container').length,
    raw_tex: ['\\sigma(', '\\odot', '\\begin{', '\\frac', '\\(', '\\[']
        .filter(s => text.includes(s)),
    images: images.length,
    broken_images: images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src),
    links: Array.from(document.querySelectorAll('a[href]')).map(a => a.href),
    height: Math.max(document.documentElement.scrollHeight, 600),
  };
})()
"""


def _find_browser() -> str | None:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def _unavailable(reason: str) -> None:
    if REQUIRED:
        pytest.fail(f"{reason} (NUMPY_RNN_REQUIRE_BROWSER=1)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def site() -> Iterator[Path]:
    """The built site's folder: docs/_build/html, or one built now into a temporary folder."""
    given = os.environ.get("NUMPY_RNN_DOCS_HTML")
    built = Path(given) if given else ROOT / "docs" / "_build" / "html"
    if (built / "index.html").is_file():
        yield built
        return
    try:
        import myst_nb  # noqa: F401
        import sphinx  # noqa: F401
    except ImportError:
        _unavailable(f"no built site in {built} and Sphinx is not installed "
                     f"(pip install -e '.[docs]')")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "html"
        done = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q",
                               "-b", "html", "-d", str(Path(tmp) / "doctrees"),
                               str(ROOT / "docs"), str(out)],
                              capture_output=True, text=True, cwd=ROOT)
        assert done.returncode == 0, f"the docs build failed:\n{done.stdout}\n{done.stderr}"
        yield out


class Browser:
    """Headless Chromium driven over the DevTools protocol on a pipe (fd 3 in, fd 4 out)."""

    def __init__(self, executable: str, profile: str) -> None:
        to_browser_r, self._out = os.pipe()
        self._in, from_browser_w = os.pipe()

        def plumb() -> None:  # in the child: the protocol's pipes at fds 3 and 4
            a, b = os.dup(to_browser_r), os.dup(from_browser_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        args = [executable, "--headless", "--no-sandbox", "--disable-gpu",
                "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
                "--remote-debugging-pipe", f"--user-data-dir={profile}",
                # offline: no host name resolves, and no proxy either
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost",
                "--proxy-server=127.0.0.1:9", "--hide-scrollbars", "about:blank"]
        self.proc = subprocess.Popen(args, preexec_fn=plumb, close_fds=False,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target,
                                 flatten=True)["sessionId"]
        for domain in ("Page.enable", "Network.enable"):
            self.call(domain, session=True)
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=1400, height=1000,
                  deviceScaleFactor=1, mobile=False)

    def _read(self) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._in], [], [], 120)
            if not ready:
                raise RuntimeError("the browser sent nothing for 120 s")
            chunk = os.read(self._in, 1 << 16)
            if not chunk:
                raise RuntimeError("the browser closed its DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, session: bool = False, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        request: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session:
            request["sessionId"] = self.session
        os.write(self._out, json.dumps(request).encode() + b"\0")
        while True:
            message = self._read()
            if message.get("id") == self._next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, event: str) -> None:
        while True:
            for i, message in enumerate(self.events):
                if message.get("method") == event:
                    del self.events[: i + 1]
                    return
            self.events.append(self._read())

    def open(self, url: str) -> list[str]:
        """Load ``url``; return the URLs of every request it made."""
        self.events.clear()
        self.call("Page.navigate", session=True, url=url)
        self.wait_for("Page.loadEventFired")
        return [m["params"]["request"]["url"] for m in self.events
                if m.get("method") == "Network.requestWillBeSent"]

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", session=True, expression=expression,
                           awaitPromise=True, returnByValue=True, timeout=30000)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"]["value"]

    def screenshot(self, path: Path, height: int) -> None:
        import base64

        shot = self.call("Page.captureScreenshot", session=True, format="png",
                         captureBeyondViewport=True,
                         clip={"x": 0, "y": 0, "width": 1400, "height": min(height, 12000),
                               "scale": 1})
        path.write_bytes(base64.b64decode(shot["data"]))

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, OSError):
            self.call("Browser.close")
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._in)
        os.close(self._out)


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    executable = _find_browser()
    if executable is None:
        _unavailable("no Chromium to open the site with (apt-get install chromium)")
    assert executable is not None
    with tempfile.TemporaryDirectory() as profile:
        b = Browser(executable, profile)
        try:
            yield b
        finally:
            b.close()


class _Ids(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for key, value in attrs:
            if key in ("id", "name") and value:
                self.ids.add(value)


def _ids(page: Path, cache: dict[Path, set[str]]) -> set[str]:
    if page not in cache:
        parser = _Ids()
        parser.feed(page.read_text(encoding="utf-8"))
        cache[page] = parser.ids
    return cache[page]


def test_every_page_renders_math_links_and_images_offline(site: Path, browser: Browser) -> None:
    pages = sorted(p for p in site.rglob("*.html") if "_static" not in p.parts)
    assert len(pages) > 20, f"only {len(pages)} pages in {site}"
    shots = os.environ.get("NUMPY_RNN_DOCS_SCREENSHOTS")
    if shots:
        Path(shots).mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    ids: dict[Path, set[str]] = {}
    math_pages = images = links = 0
    for page in pages:
        name = page.relative_to(site).as_posix()
        requests = browser.open(page.as_uri())
        report = browser.evaluate(PAGE_REPORT)
        remote = [u for u in requests if urlsplit(u).scheme not in ("file", "data", "blob",
                                                                    "about", "")]
        if remote:
            problems.append(f"{name}: fetched from the network: {remote}")
        if report["math"]:
            math_pages += 1
            if not report["mathjax"]:
                problems.append(f"{name}: has math but MathJax did not load")
            elif report["typeset"] != report["math"]:
                problems.append(f"{name}: {report['math'] - report['typeset']} of "
                                f"{report['math']} formulas not typeset")
        if report["raw_tex"]:
            problems.append(f"{name}: raw TeX visible: {report['raw_tex']}")
        images += report["images"]
        if report["broken_images"]:
            problems.append(f"{name}: images that did not load: {report['broken_images']}")
        for href in report["links"]:
            url = urlsplit(href)
            if url.scheme != "file":
                continue
            links += 1
            target = Path(unquote(url.path))
            if target.is_dir():
                target = target / "index.html"
            if not target.is_file():
                problems.append(f"{name}: broken link {href}")
            elif url.fragment and target.suffix == ".html" and \
                    unquote(url.fragment) not in _ids(target, ids):
                problems.append(f"{name}: link to a missing anchor {href}")
        if shots:
            browser.screenshot(Path(shots) / (name.replace("/", "__") + ".png"),
                               int(report["height"]))
    assert not problems, "\n".join(problems)
    # The pages this test exists for were really checked.
    assert math_pages >= 6, f"math on only {math_pages} pages"
    assert images >= 5, f"only {images} images"
    assert links > 100, f"only {links} internal links"


def test_the_gate_math_is_typeset_beside_the_source(site: Path, browser: Browser) -> None:
    browser.open((site / "gate-math" / "lstm.html").as_uri())
    report = browser.evaluate(PAGE_REPORT)
    assert report["containers"] >= 5, report
    code = browser.evaluate(
        "Array.from(document.querySelectorAll('.gate-row pre')).map(p => p.innerText).join('\\n')")
    source = (ROOT / "numpy_rnn" / "nn" / "steps.py").read_text(encoding="utf-8")
    # The quoted lines are the file's own, read at build time.
    for line in ("c_new += ig", "dc += dc_new", "dc *= cache.f[t]"):
        assert line in code and line in source, line
    mathjax = site / "_static" / "mathjax" / "tex-chtml.js"
    assert mathjax.is_file(), "MathJax is not bundled with the site"


def test_the_api_reference_shows_load_and_each_tasks_trained_model(site: Path,
                                                                   browser: Browser) -> None:
    """docs/api/load.md: ``numpy_rnn.load`` documented (a link target), an example per task, and
    each trained model's inference methods with their docstrings."""
    page = site / "api" / "load.html"
    assert "numpy_rnn.load" in _ids(page, {}), "numpy_rnn.load has no entry of its own"
    browser.open(page.as_uri())
    text = browser.evaluate("document.querySelector('main').innerText")
    for call in ('.sample(10, temperature=0.8', '.predict(["abies lasiocarpa"])',
                 'condition="hi"', 'g2p.translate("hello")', "TrainConfig.for_task("):
        assert call in text, f"the example {call!r} is missing"
    methods = {"Generator": ("sample",), "TrainedClassifier": ("predict", "attention",
                                                               "probabilities"),
               "ConditionalGenerator": ("sample",),
               "Translator": ("translate", "hypotheses", "tokens")}
    signatures = browser.evaluate(
        "Array.from(document.querySelectorAll('dl.py > dt')).map(d => d.innerText)")
    for cls, names in methods.items():
        assert any(cls in s for s in signatures), f"{cls} is not documented"
        for name in names:
            assert any(s.lstrip().startswith(name + "(") for s in signatures), \
                f"{cls}.{name} is not documented"


def test_the_tutorials_call_the_python_api_not_the_command_line() -> None:
    """A learner in a notebook trains with ``train(TrainConfig...)`` and uses the model through
    ``numpy_rnn.load``, not by running ``python -m numpy_rnn`` in a subprocess."""
    for name in ("char-model.md", "shapes.md"):
        text = (ROOT / "docs" / "tutorials" / name).read_text(encoding="utf-8")
        assert "subprocess" not in text, name
        assert "train(TrainConfig.for_task(" in text or "TrainConfig.for_task(" in text, name
        assert "numpy_rnn.load(" in text, name
