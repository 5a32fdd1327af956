"""Audio recipes end to end at smoke size, the registered audio sources, the event model and loss."""

import json
from pathlib import Path

import pytest
import torch

from modalab import registry
from modalab.config import ConfigError, from_dict, load
from modalab.data.dataset import DataError
from modalab.data.sources import spoken_digits as sd
from modalab.data.sources.audio_sources import AudioFolderConfig, build_audio_folder
from modalab.experiment.runner import run
from modalab.models.event_detector import EventBCE, EventCNNConfig, build_event_cnn

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
QUIET = ["run.progress=false", "train.num_threads=1"]
EVENTS_SMOKE = [*QUIET, "train.steps=3", "train.batch_size=8", "data.n_train=16", "data.n_test=8",
                "data.duration=2.0", "model.widths=[4,8]", "model.n_mels=16"]
CLAP_SMOKE = [*QUIET, "train.steps=3", "train.batch_size=16", "train.eval_every=0", "model.audio.width=32",
              "model.audio.depth=1", "model.text.width=32"]
BUILTIN = ["data.n_speakers=4", "data.per_digit=1"]


def _results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


@pytest.mark.parametrize("pooling", ["max", "mean", "attention"])
def test_audio_events_recipe_runs(pooling, tmp_path):
    out = run(load(RECIPES / "audio_events.yaml", [*EVENTS_SMOKE, f"model.pooling={pooling}"]), tmp_path / "r")
    res = _results(out)
    for key in ("tagging_mAP", "frame_F1", "onset_F1"):
        assert 0.0 <= res[key] <= 1.0
    assert res["pooling"] == pooling and res["num_train"] == 14 and res["num_val"] == 2 and res["num_test"] == 8
    assert res["eval_splits"] == ["val", "test"] and 0.0 <= res["val_tagging_mAP"] <= 1.0
    assert res["test_tagging_mAP"] == res["tagging_mAP"]
    assert res["frame_hop_s"] == pytest.approx(0.02)  # 160 samples x stride 2 at 16 kHz
    assert (out / "report.html").is_file()


def test_audio_events_strong_labels_run(tmp_path):
    over = [*EVENTS_SMOKE, "loss.frame_weight=1.0", "train.accum_steps=2"]  # EventBatch splits (naive)
    out = run(load(RECIPES / "audio_events.yaml", over), tmp_path / "r")
    assert 0.0 <= _results(out)["onset_F1"] <= 1.0


def test_clap_recipe_runs_with_speaker_counts(tmp_path):
    # accum_steps=2 with the contrastive task's exact (GradCache) path, through ClapTask's delegation
    out = run(load(RECIPES / "clap_spoken_digits.yaml", [*CLAP_SMOKE, *BUILTIN, "train.accum_steps=2"]), tmp_path / "r")
    assert '"mode": "exact"' in (out / "metrics.jsonl").read_text()
    res = _results(out)
    assert 0.0 <= res["zeroshot_top1"] <= res["zeroshot_top5"] <= 1.0
    assert {"image_to_text_R@1", "text_to_image_R@1", "image_to_text_median_rank"} <= set(res)
    # 4 speakers x 10 digits x 1, one speaker held out (round(0.25 * 4))
    assert res["num_train"] == 20 and res["num_val"] == 10 and res["num_test"] == 10 and res["split_by"] == "speaker"
    (spk,) = res["test_speakers"]
    assert res[f"num_test/{spk}"] == 10 and f"zeroshot_top1/{spk}" in res
    assert res["num_train_speakers"] == 2 and res["num_test_speakers"] == 1  # + 1 whole validation speaker


def test_clap_recipe_on_audio_folder_counts_skipped(tmp_path):
    root = tmp_path / "wavs"
    sd.spoken_digits(n_speakers=3, per_digit=1, seed=0, out_dir=root)
    (root / "3_s09_0.wav").write_bytes(b"not audio")  # matches the pattern, cannot be decoded
    (root / "readme_x.wav").write_bytes(b"")  # does not match {label}_{speaker}_{index}
    over = [*CLAP_SMOKE, "data.source=audio_folder", f"data.root={root}", "data.on_error=skip",
            "data.test_speakers=[s02]", "train.batch_size=8"]
    res = _results(run(load(RECIPES / "clap_spoken_digits.yaml", over), tmp_path / "r"))
    assert res["num_skipped"] == 1 and "3_s09_0.wav" in res["skipped"][0]
    assert res["num_unmatched_names"] == 1
    assert res["num_test"] == 10 and res["num_test/s02"] == 10 and res["num_train"] == 10 and res["num_val"] == 10


def test_audio_folder_errors_name_the_problem(tmp_path):
    root = tmp_path / "wavs"
    sd.spoken_digits(n_speakers=2, per_digit=1, seed=0, out_dir=root)
    (root / "3_s09_0.wav").write_bytes(b"not audio")
    with pytest.raises(Exception, match="3_s09_0.wav"):  # on_error: error (default)
        build_audio_folder(AudioFolderConfig(source="audio_folder", root=str(root)), seed=0)
    with pytest.raises(DataError, match="not a directory"):
        build_audio_folder(AudioFolderConfig(source="audio_folder", root=str(tmp_path / "nope")), seed=0)


def test_audio_sources_split_and_wave_contract():
    cfg = registry.get("source", "spoken_digits").schema(source="spoken_digits", n_speakers=4, per_digit=1)
    data = registry.build("source", "spoken_digits", cfg, seed=0)
    assert not set(data.speakers["train"]) & set(data.speakers["test"])  # speakers held out whole
    s = data.test[0]
    assert s.media.shape == (16000,) and s.media.dtype == torch.float32 and data.image_size == 16000
    assert data.classnames[s.label] in s.text
    rnd = registry.build("source", "spoken_digits", cfg.model_copy(update={"split_by": "random"}), seed=0)
    assert len(set(rnd.speakers["test"]) & set(rnd.speakers["train"])) >= 2  # random split mixes speakers
    ev_cfg = registry.get("source", "sound_events").schema(source="sound_events", n_train=2, n_test=2, duration=1.0)
    ev = registry.build("source", "sound_events", ev_cfg, seed=0)
    assert ev.train[0].media.shape == (16000,) and ev.train[0].meta["events"]


def test_event_detector_shapes_and_loss():
    torch.manual_seed(0)
    for pooling in ("max", "mean", "attention"):
        cfg = EventCNNConfig(name="event_cnn", n_mels=16, widths=[4, 8], pooling=pooling)
        m = build_event_cnn(cfg, n_classes=5).eval()
        out = m(torch.randn(3, 32000) * 0.1)  # 2 s -> 200 mel frames -> 100 output frames
        assert out["frame_logits"].shape == (3, 100, 5) and out["clip_prob"].shape == (3, 5)
        assert torch.all((out["clip_prob"] >= 0) & (out["clip_prob"] <= 1))
    p, t = torch.tensor([[0.9, 0.2]]), torch.tensor([[1.0, 0.0]])
    want = -(torch.log(torch.tensor(0.9)) + torch.log(torch.tensor(0.8))) / 2
    assert EventBCE()(p, t).item() == pytest.approx(want.item(), rel=1e-6)
    with pytest.raises(ValueError, match="frame_logits"):
        EventBCE(frame_weight=1.0)(p, t)
    with pytest.raises(ValueError, match="divisible"):
        build_event_cnn(EventCNNConfig(name="event_cnn", n_mels=18, widths=[4, 8]), n_classes=2)


def test_audio_tasks_reject_wrong_sources_and_keys(tmp_path):
    raw = {"task": "audio_events", "data": {"source": "spoken_digits", "n_speakers": 2, "per_digit": 1,
                                             "val_fraction": 0},
           "model": {"name": "event_cnn", "n_mels": 16, "widths": [4, 8]}, "loss": {"name": "event_bce"},
           "eval": {}, "train": {"steps": 1, "batch_size": 4}, "run": {"progress": False}}
    with pytest.raises(ValueError, match="meta\\['events'\\]"):
        run(from_dict(raw), tmp_path / "r")
    with pytest.raises(ConfigError, match="allowed keys in 'eval'"):
        from_dict(raw, ["eval.prompts=[x]"])
