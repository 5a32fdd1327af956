"""The base install (no [audio] / [video] extras) runs the image recipes; missing extras are named."""

import subprocess
import sys

import pytest

BLOCK = "import sys\nfor m in ('librosa', 'soundfile', 'av', 'soxr'):\n    sys.modules[m] = None\n"


def test_clip_digits_runs_without_audio_and_video_libraries(tmp_path):
    code = BLOCK + (
        "from modalab.cli import main\n"
        "rc = main(['run', 'recipes/clip_digits.yaml', '--out', %r, 'model.vision.width=16', 'model.vision.depth=1',"
        " 'model.text.width=16', 'model.text.depth=1', 'model.embed_dim=16', 'train.steps=2', 'train.batch_size=32',"
        " 'train.eval_every=0', 'train.num_threads=1', 'run.progress=false'])\n"
        "print('RC', rc, sorted({m.split('.')[0] for m in sys.modules if sys.modules[m] is not None}"
        " & {'librosa', 'soundfile', 'av'}))\n" % str(tmp_path / "run")
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "RC 0 []"
    assert (tmp_path / "run" / "results.json").is_file()


def test_a_missing_extra_is_named_when_first_used():
    code = BLOCK + (
        "from modalab.video import decode\n"
        "try:\n    decode.probe(decode.__file__)\nexcept ImportError as e:\n    print('ERR', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "ERR av is needed here but not installed: pip install 'modalab[video]'" in out.stdout, out.stderr


def test_lazy_module_imports_once_and_runs_setup_first(monkeypatch):
    from modalab._optional import lazy, require

    calls = []
    m = lazy("json", setup=lambda: calls.append(1))
    assert m.dumps([1]) == "[1]" and m.loads("2") == 2
    assert calls == [1]
    monkeypatch.setitem(sys.modules, "librosa", None)
    with pytest.raises(ImportError, match=r"librosa is needed here but not installed: pip install 'modalab\[audio\]'"):
        require("librosa")
    with pytest.raises(ImportError, match=r"pip install no_such_pkg_x"):
        require("no_such_pkg_x.sub")
