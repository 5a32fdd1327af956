"""Screenshot a modalab report with headless Chromium and check it renders cleanly.

    python scripts/screenshot_report.py runs/chapter5/temperature/report.html --out shot.png

Chromium (Debian: ``apt-get install chromium``) renders the self-contained HTML offline (network
features off, a fresh profile). Two small scripts are injected: one at the top of <head> records
console errors, uncaught exceptions and failed resources; one on ``load`` counts the <img>
elements that decoded and finds tables whose right edge passes the viewport, and writes all of it
as JSON into the title, which ``--dump-dom`` prints. ``--screenshot`` writes the PNG. Exit code 1
when an image failed, an error was logged, or a table overflows. ``--json`` prints the findings.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars"]
CATCH = """<script>window.__errors = [];
(function () {
  const orig = console.error;
  console.error = function (...a) { window.__errors.push('console.error: ' + a.join(' ')); orig.apply(console, a); };
  window.addEventListener('error', e => window.__errors.push(e.message ? 'uncaught: ' + e.message
    : 'failed resource: ' + ((e.target && (e.target.src || e.target.href)) || '?').slice(0, 80)), true);
})();</script>"""
PROBE = """<script>window.addEventListener('load', () => {
  const imgs = [...document.images];
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  const vw = document.documentElement.clientWidth;
  const wide = [...document.querySelectorAll('table')].map((t, i) => [i, Math.round(t.getBoundingClientRect().right)])
    .filter(([i, r]) => r > vw + 1);
  document.title = 'PROBE ' + JSON.stringify({images_ok: ok, images: imgs.length, viewport: vw,
    page_width: document.documentElement.scrollWidth, tables: document.querySelectorAll('table').length,
    overflowing_tables: wide, errors: window.__errors});
});</script>"""


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if shutil.which(name):
            return shutil.which(name)  # type: ignore[return-value]
    raise FileNotFoundError("no chromium found; install it (Debian: apt-get install -y chromium)")


def inject(page: str) -> str:
    head = page.find("<head>")
    page = page[: head + 6] + CATCH + page[head + 6:] if head >= 0 else CATCH + page
    return page.replace("</body>", PROBE + "</body>")


def check_report(report: Path, out: Path | None, width: int = 1280, height: int = 2400) -> dict:
    """Render ``report`` at ``width`` px (screenshot into ``out`` when given); return the probe's
    findings: images decoded / on the page, console errors, tables past the viewport."""
    chrome = find_chromium()
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "page.html"
        page.write_text(inject(report.read_text(encoding="utf-8")), encoding="utf-8")
        common = [chrome, *FLAGS, f"--user-data-dir={tmp}/profile", f"--window-size={width},{height}"]
        res = subprocess.run([*common, "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
                             capture_output=True, text=True, timeout=120)
        if out is not None:
            subprocess.run([*common, f"--screenshot={out.resolve()}", page.as_uri()],
                           capture_output=True, text=True, timeout=120)
    m = re.search(r"<title>PROBE (.*?)</title>", res.stdout, re.S)
    if not m:
        raise RuntimeError("the probe did not report; chromium output:\n" + (res.stdout + res.stderr)[-2000:])
    import html as _html

    return json.loads(_html.unescape(m.group(1)))


def problems(found: dict) -> list[str]:
    out = ([f"{found['images'] - found['images_ok']} image(s) failed to load"]
           if found["images_ok"] < found["images"] else [])
    out += found["errors"]
    out += [f"table {i} ends at {r} px, past the {found['viewport']} px viewport"
            for i, r in found["overflowing_tables"]]
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("report", type=Path)
    p.add_argument("--out", type=Path, default=Path("report.png"))
    p.add_argument("--width", type=int, default=1280, help="viewport width in px")
    p.add_argument("--height", type=int, default=2400, help="viewport (and screenshot) height in px")
    p.add_argument("--json", action="store_true", help="print the probe's findings as JSON")
    a = p.parse_args()
    found = check_report(a.report, a.out, a.width, a.height)
    if a.json:
        print(json.dumps(found))
    bad = problems(found)
    print(f"{a.report}: {found['images_ok']}/{found['images']} images loaded; {found['tables']} tables; "
          f"{len(bad)} problem(s); screenshot {a.out}")
    for b in bad:
        print("  " + b)
    return 0 if found["images"] > 0 and not bad and a.out.is_file() else 1


if __name__ == "__main__":
    sys.exit(main())
