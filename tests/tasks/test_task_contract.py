"""The task contract (tasks/base.py): every registered task implements it; the runner checks it."""

import typing

import pytest
from torch import nn

from modalab import registry
from modalab.tasks.base import ExactAccumulation, Resumable, Task, implements, missing_members


def _task_classes():
    out = {}
    for entry in registry.entries("task"):
        cls = typing.get_type_hints(entry.builder)["return"]
        out[entry.name] = cls
    return out


def test_every_registered_task_class_implements_the_contract():
    classes = _task_classes()
    assert {"contrastive", "contrastive_varres", "clap", "caption", "fusion_ablation", "audio_events",
            "video_actions", "video_long_tome", "video_localization", "tokenizer", "unified"} <= set(classes)
    for name, cls in classes.items():
        assert missing_members(cls) == [], name
        assert cls.__module__.startswith("modalab.tasks."), (name, cls.__module__)


def test_optional_hooks_are_declared_where_they_exist():
    classes = _task_classes()
    assert implements(classes["contrastive"], ExactAccumulation)
    assert implements(classes["clap"], Resumable)
    assert not implements(classes["caption"], Resumable)


class _Half:
    model = nn.Linear(1, 1)

    def train_loader(self):
        return []

    def step(self, batch):
        return None, {}


def test_missing_members_names_what_is_absent_and_instances_need_the_model():
    assert missing_members(_Half()) == ["after_step", "counts", "evaluate", "extra_modules", "state"]
    assert not implements(_Half(), Task)

    class NoModel:
        def train_loader(self):
            return []

    assert missing_members(NoModel())[0] == "after_step" and "model" in missing_members(NoModel())
    assert "model" not in missing_members(NoModel)  # on a class, instance attributes are not checked


def test_implements_is_not_cached_per_class():
    class T:
        def embed_batch(self, b):
            return b

        def loss_from_embeddings(self, e, b):
            return e, {}

    assert implements(T(), ExactAccumulation)
    del T.embed_batch
    assert not implements(T(), ExactAccumulation)


def test_runner_rejects_a_task_without_the_contract(tmp_path):
    from modalab.config import load
    from modalab.experiment.runner import run
    from modalab.tasks.contrastive import ContrastiveEval

    @registry.register("task", "_half_task", schema=ContrastiveEval)
    def build(recipe, run_dir) -> _Half:
        return _Half()

    try:
        recipe = load("recipes/clip_digits.yaml", ["task=_half_task", "train.steps=1", "run.progress=false"])
        with pytest.raises(TypeError, match=r"_half_task.*missing after_step, counts"):
            run(recipe, tmp_path / "r")
    finally:
        registry.unregister("task", "_half_task")
