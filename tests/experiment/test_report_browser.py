"""Run and sweep reports rendered by headless Chromium at 1280 px: every image decodes, nothing
is logged to the console, and no table is wider than the viewport."""

import importlib.util
import shutil
from pathlib import Path

import pytest

from modalab.experiment.report import write_report, write_sweep_report
from tests.experiment.report_fakes import fake_run, long_arm_sweep

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = any(shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome"))
pytestmark = pytest.mark.skipif(
    not CHROMIUM, reason="headless Chromium is not installed (Debian: apt-get install -y chromium; .ci/run does it)")


def _checker():
    spec = importlib.util.spec_from_file_location("screenshot_report", ROOT / "scripts/screenshot_report.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_run_and_sweep_reports_render_cleanly(tmp_path):
    chk = _checker()
    run_report = write_report(fake_run(tmp_path / "run"))
    sweep_report = write_sweep_report(long_arm_sweep(tmp_path / "sw"))
    for report, n_images in ((run_report, 7 + 8), (sweep_report, 2 + 3)):
        found = chk.check_report(report, None, width=1280)
        assert found["images"] == n_images and found["images_ok"] == n_images, found
        assert found["errors"] == [], found
        assert found["tables"] >= 2 and found["overflowing_tables"] == [], found
        assert found["page_width"] <= found["viewport"], found
        assert chk.problems(found) == []


def test_the_check_catches_a_wide_table_and_a_console_error(tmp_path):
    chk = _checker()
    page = tmp_path / "bad.html"
    page.write_text("<!doctype html><html><head><title>t</title></head><body><table><tr><td>" + "x" * 400
                    + "</td></tr></table><script>console.error('boom')</script></body></html>")
    found = chk.check_report(page, None, width=1280)
    assert found["overflowing_tables"] and found["errors"] == ["console.error: boom"]
    assert len(chk.problems(found)) == 2
