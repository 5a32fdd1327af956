"""Screenshot a modalab report with headless Chromium and check that its images loaded.

    python scripts/screenshot_report.py runs/chapter5/temperature/report.html --out shot.png

Chromium (Debian: ``apt-get install chromium``) renders the self-contained HTML offline (network
features off). The page is first given a small script that, once loaded, writes the number of
<img> elements and how many decoded (``complete && naturalWidth > 0``) into the title; Chromium's
``--dump-dom`` prints it, and ``--screenshot`` writes the PNG. Exit code 1 when any image failed.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars"]
PROBE = """<script>window.addEventListener('load', () => {
  const imgs = [...document.images];
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  document.title = 'IMAGES ' + ok + '/' + imgs.length;
});</script>"""


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if shutil.which(name):
            return shutil.which(name)  # type: ignore[return-value]
    raise FileNotFoundError("no chromium found; install it (Debian: apt-get install -y chromium)")


def check_report(report: Path, out: Path, width: int = 1200, height: int = 2400) -> tuple[int, int]:
    """Screenshot ``report`` into ``out``; return (images decoded, images on the page)."""
    chrome = find_chromium()
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "page.html"
        page.write_text(report.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
        common = [chrome, *FLAGS, f"--user-data-dir={tmp}/profile", f"--window-size={width},{height}"]
        dom = subprocess.run([*common, "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
                             capture_output=True, text=True, timeout=120).stdout
        subprocess.run([*common, f"--screenshot={out.resolve()}", page.as_uri()],
                       capture_output=True, text=True, timeout=120)
    m = re.search(r"IMAGES (\d+)/(\d+)", dom)
    if not m:
        raise RuntimeError("the probe did not report; chromium output:\n" + dom[-2000:])
    return int(m.group(1)), int(m.group(2))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("report", type=Path)
    p.add_argument("--out", type=Path, default=Path("report.png"))
    a = p.parse_args()
    ok, total = check_report(a.report, a.out)
    print(f"{a.report}: {ok}/{total} images loaded; screenshot {a.out}")
    return 0 if total > 0 and ok == total and a.out.is_file() else 1


if __name__ == "__main__":
    sys.exit(main())
