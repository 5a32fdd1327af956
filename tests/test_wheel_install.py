"""A non-editable install has the recipes: build the wheel, install it into a fresh venv (its
dependencies seen through the test venv's site-packages), then ``recipes cp`` and ``run``."""

import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _sh(cmd: list[str], cwd: Path, timeout: int = 600) -> str:
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                         env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "HOME": str(cwd)})
    assert res.returncode == 0, f"{cmd}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res.stdout


@pytest.mark.slow
def test_wheel_has_the_recipes_and_runs_one(tmp_path):
    src = tmp_path / "src_copy"  # build from a copy: no build/ or egg-info in the checkout
    for part in ("src", "recipes"):
        shutil.copytree(ROOT / part, src / part, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for f in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / f, src / f)
    dist = tmp_path / "dist"
    _sh([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(src)],
        tmp_path)
    wheel = next(dist.glob("modalab-*.whl"))
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    site = Path(sysconfig.get_path("purelib", vars={"base": str(env_dir), "platbase": str(env_dir)}))
    # the test venv's packages (torch, numpy, ...) after the fresh venv's own: the wheel's modalab wins
    (site / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    py = env_dir / "bin" / "python"
    _sh([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", "-q", str(wheel)],
        tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    where = _sh([str(py), "-c", "import modalab; print(modalab.__file__)"], work)
    assert where.startswith(str(site)), where  # the installed copy, not the checkout
    modalab = str(env_dir / "bin" / "modalab")
    listed = _sh([modalab, "recipes", "list"], work)
    assert "clip_digits " in listed and "chapter5/temperature" in listed
    _sh([modalab, "recipes", "cp", "clip_digits", "./my.yaml"], work)
    out = _sh([modalab, "run", "./my.yaml", "train.steps=2", "train.batch_size=32", "run.progress=false",
               "train.num_threads=1", "--out", "run"], work)
    assert "zeroshot_top1" in out and (work / "run" / "results.json").is_file()
    assert (work / "run" / "report.html").is_file()
