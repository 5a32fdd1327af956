"""scripts/make_audio_folder.py writes a real folder that the clap recipe reads through audio_folder."""

import importlib.util
import json
from pathlib import Path

import pytest
import soundfile as sf

from modalab.config import load
from modalab.experiment.runner import run

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("make_audio_folder", ROOT / "scripts" / "make_audio_folder.py")
maf = importlib.util.module_from_spec(spec)
spec.loader.exec_module(maf)


def test_audio_folder_script_writes_named_8khz_files(tmp_path):
    s = maf.render(tmp_path / "w", speakers=3, per_digit=1, sr=8000, snr_db=(10.0, 20.0), seed=1)
    files = sorted((tmp_path / "w").glob("*.wav"))
    assert s["files"] == len(files) == 30 and s["speakers"] == ["s00", "s01", "s02"]
    assert s["per_label"] == {str(d): 3 for d in range(10)}
    info = sf.info(str(files[0]))
    assert info.samplerate == 8000 and info.subtype == "PCM_16" and info.channels == 1
    assert len({sf.info(str(f)).frames for f in files}) > 1  # own length per file, not padded
    with pytest.raises(FileExistsError, match="already holds"):
        maf.render(tmp_path / "w", speakers=2, per_digit=1, sr=8000, snr_db=None, seed=1)
    with pytest.raises(ValueError, match="--sr"):
        maf.render(tmp_path / "x", speakers=2, per_digit=1, sr=0, snr_db=None, seed=1)


def test_clap_recipe_runs_on_script_folder_split_by_speaker(tmp_path):
    root = tmp_path / "wavs"
    maf.render(root, speakers=4, per_digit=1, sr=8000, snr_db=(15.0, 25.0), seed=2)
    over = ["run.progress=false", "train.num_threads=1", "train.steps=3", "train.batch_size=8",
            "train.eval_every=0", "model.audio.width=32", "model.audio.depth=1", "model.text.width=32",
            "data.source=audio_folder", f"data.root={root}", "data.split_by=speaker"]
    out = run(load(ROOT / "recipes" / "clap_spoken_digits.yaml", over), tmp_path / "r")
    res = json.loads((out / "results.json").read_text())
    (held,) = res["test_speakers"]  # round(0.25 * 4) = 1 speaker held out whole
    # one of the 3 training speakers is the validation split (whole speakers, at least one)
    assert res["split_by"] == "speaker" and res["num_train"] == 20 and res["num_val"] == 10 and res["num_test"] == 10
    assert res[f"num_test/{held}"] == 10 and 0.0 <= res[f"zeroshot_top1/{held}"] <= 1.0
    assert res["num_train_speakers"] == 2 and res["num_test_speakers"] == 1 and res["num_skipped"] == 0
    assert 0.0 <= res["val_zeroshot_top1"] <= 1.0
    assert 0.0 <= res["zeroshot_top1"] <= 1.0 and "image_to_text_R@1" in res
