"""Render an HTML file in real headless Chromium (Debian package) and report what a reader would see.

No extra Python dependency: a probe script is injected into a temporary copy of the page. It records
JavaScript errors, ``console.error`` calls and resources that failed to load, then writes its findings into
the DOM, which ``chromium --dump-dom`` returns. A second run takes a screenshot.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

PROBE = """<script>
window.__probe = {errors: [], console: []};
window.addEventListener('error', function (e) {
  var t = e.target || {};
  if (t.tagName) { window.__probe.errors.push('failed to load ' + t.tagName + ' ' + (t.src || t.href || '').slice(0, 80)); }
  else { window.__probe.errors.push('js error: ' + e.message); }
}, true);
(function () { var orig = console.error; console.error = function () {
  window.__probe.console.push(Array.prototype.join.call(arguments, ' ')); orig.apply(console, arguments); }; })();
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var broken = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); }).length;
  var out = {title: document.title, images: imgs.length, broken: broken,
             tables: document.querySelectorAll('table').length,
             headings: Array.prototype.map.call(document.querySelectorAll('h1,h2'), function (h) { return h.textContent.trim(); }),
             errors: window.__probe.errors, console: window.__probe.console};
  var pre = document.createElement('pre'); pre.id = '__probe_result';
  pre.textContent = JSON.stringify(out); document.body.appendChild(pre);
});
</script>"""

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars"]


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def render(html_path: Path, screenshot: Path | None = None, timeout: float = 120) -> dict:
    exe = chromium()
    if exe is None:
        raise RuntimeError("chromium not installed")
    html = Path(html_path).read_text(encoding="utf-8")
    probed = re.sub(r"(<head[^>]*>)", r"\1" + PROBE.replace("\\", "\\\\"), html, count=1, flags=re.I)
    if probed == html:
        probed = PROBE + html
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "page.html"
        page.write_text(probed, encoding="utf-8")
        base = [exe, *FLAGS, f"--user-data-dir={Path(tmp) / 'profile'}"]
        dom = subprocess.run([*base, "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
                             capture_output=True, text=True, timeout=timeout).stdout
        if screenshot is not None:
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run([*base, f"--screenshot={screenshot}", "--window-size=1280,2400",
                            Path(html_path).resolve().as_uri()], capture_output=True, timeout=timeout)
    m = re.search(r'<pre id="__probe_result">(.*?)</pre>', dom, flags=re.S)
    if not m:
        raise AssertionError(f"page did not finish loading in chromium; DOM head: {dom[:500]!r}")
    import html as _html

    return json.loads(_html.unescape(m.group(1)))
