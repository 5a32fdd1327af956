"""recipes/audio_captions.yaml end to end at smoke size: stages switch, captions are scored."""

import json
from pathlib import Path

from modalab.config import load
from modalab.experiment.runner import run

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
SMOKE = ["run.progress=false", "train.num_threads=1", "train.steps=4", "train.batch_size=4", "data.n_train=8",
         "data.n_test=4", "data.duration=1.0", "model.encoder.dim=16", "model.encoder.depth=1",
         "model.encoder.n_mels=16", "model.decoder.dim=16", "model.decoder.depth=1",
         "model.decoder.pretrain_steps=2", "model.decoder.pretrain_batch_size=4",
         'train.stages=[{"name":"a","steps":2,"trainable":["encoder.*","adapter.*"]},'
         '{"name":"b","steps":2,"trainable":["adapter.*","decoder.*lora_*"]}]']


def test_audio_captions_recipe_runs(tmp_path):
    out = run(load(RECIPES / "audio_captions.yaml", SMOKE), tmp_path / "r")
    res = json.loads((out / "results.json").read_text())
    for key in ("event_precision", "event_recall", "event_f1", "order_accuracy", "bleu4", "rouge_l"):
        assert 0.0 <= res[key] <= 1.0, key
    assert 0.0 <= res["cider_d"] <= 10.0
    assert res["num_train"] + res["num_val"] == 8 and res["num_val"] >= 1 and res["num_test"] == 4
    assert 0.0 <= res["val_bleu4"] <= 1.0  # val scored beside test and res["audio_tokens_per_second"] == 10.0
    assert len(res["caption_examples"]) == 4 and all(e["reference"] for e in res["caption_examples"])
    stages = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    stages = [r for r in stages if r.get("event") == "stage"]
    assert [s["stage"] for s in stages] == [0, 1] and stages[1]["trainable_params"] < stages[0]["trainable_params"]
