"""experiment/prerequisites.py: declared earlier runs are run once, cached by content, and their
directory is written into the declared key (no training here: the run function is a stand-in)."""

from pathlib import Path

from modalab.config import load
from modalab.experiment.prerequisites import content_key, resolve

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def _fake_run(calls):
    def run(recipe, out):
        calls.append((recipe.task, recipe.train.num_threads, out.name))
        out.mkdir(parents=True)
        (out / "results.json").write_text("{}")
        return out

    return run


def test_prerequisite_runs_once_then_comes_from_the_cache(tmp_path):
    rec = load(RECIPES / "caption_digits.yaml", [f"model.encoder.cache_dir={tmp_path}", "train.num_threads=1"])
    calls = []
    got, events = resolve(rec, _fake_run(calls))
    (task, threads, name), = calls
    assert task == "contrastive" and threads == 1 and ".partial-" in name
    out = Path(got.model.encoder.checkpoint)
    assert out.parent == tmp_path and out.name.startswith("clip-") and (out / "results.json").is_file()
    assert events == [{"event": "prerequisite", "key": "model.encoder.checkpoint", "source": "training",
                       "path": str(out)}]
    assert not list(tmp_path.glob("*.partial-*"))  # moved into place
    again, events2 = resolve(rec, _fake_run(calls))
    assert len(calls) == 1 and again.model.encoder.checkpoint == str(out)
    assert events2[0]["source"] == "cache"
    # everything else in the recipe is unchanged
    assert {k: v for k, v in got.to_dict().items() if k != "model"} == {
        k: v for k, v in rec.to_dict().items() if k != "model"}


def test_tasks_without_prerequisites_pass_through_and_keys_are_content_hashes():
    rec = load(RECIPES / "clip_digits.yaml")
    assert resolve(rec, lambda r, o: (_ for _ in ()).throw(AssertionError("must not run"))) == (rec, [])
    assert content_key({"a": 1, "b": [2]}) == content_key({"b": [2], "a": 1}) != content_key({"a": 2})
