"""The any-resolution recipes (issue 6): varres_digits source, contrastive_varres task, smoke runs."""

import json
from pathlib import Path

import pytest
import torch

from modalab import registry
from modalab.config import ConfigError, load
from modalab.data.batching import ResolutionScheduleSpec
from modalab.experiment.rundir import RunDir
from modalab.experiment.runner import run
from modalab.tasks.varres import VarResTask, budget_size

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
TINY = [
    "train.batch_size=32", "run.progress=false", "train.num_threads=1",
    "model.vision.depth=1", "model.text.depth=1", "model.vision.width=32", "model.text.width=32",
    "model.vision.heads=2", "model.text.heads=2",
]
SMOKE = ["train.steps=3", "train.log_every=1", "train.eval_every=0", *TINY]
KEYS = ("zeroshot_top1", "zeroshot_top5", "image_to_text_R@1", "text_to_image_R@1", "image_to_text_mean_rank")


def _task(tmp_path, recipe="clip_digits_varres_packed.yaml", extra=()) -> VarResTask:
    recipe = load(RECIPES / recipe, [*TINY, *extra])
    return registry.build("task", recipe.task, recipe, RunDir.create(tmp_path / "run", "", "x"))


@pytest.mark.parametrize(
    "name", ["clip_digits_varres_packed.yaml", "clip_digits_res_curriculum.yaml", "clip_digits_flip50.yaml"]
)
def test_recipe_smoke(name, tmp_path):
    extra = ["model.vision.unmask_steps=1"] if "flip" in name else []  # 40 of 400 in the recipe
    out = run(load(RECIPES / name, [*SMOKE, *extra]), tmp_path / "run")
    res = json.loads((out / "results.json").read_text())
    for k in KEYS:
        assert k in res and res[k] == res[k]  # present, not NaN
    assert 0.0 <= res["zeroshot_top1"] <= 1.0 and res["num_test"] == 450 and res["steps"] == 3
    if "varres" in name or "curriculum" in name:
        assert 0.5 < res["train_real_token_share"] <= 1.0
        assert 1 < res["train_tokens_per_image"] <= 1 + 64 * 1.2**2 + 1
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(r["loss"] == r["loss"] for r in logged if "loss" in r)


def test_source_registered_and_validated(tmp_path):
    splits = registry.build(
        "source", "varres_digits",
        load(RECIPES / "clip_digits_varres_packed.yaml", TINY).data, seed=0,
    )
    assert len(splits.train) == 1212 and len(splits.val) == 135 and len(splits.test) == 450
    assert splits.image_size == 16
    a, b = splits.test[3], splits.test[3]
    assert torch.equal(a.media, b.media) and a.media.shape[-2:] == splits.test.sizes[3]
    h, w = splits.test.sizes[3]
    assert 8 <= h <= 48 and 8 <= w <= 96 and a.media.min() == -1.0 and a.media.max() > 0
    t1, t2 = splits.train[0], splits.train[0]  # augmentation redraws the digit, keeps the canvas
    assert t1.media.shape == t2.media.shape and t1.label == t2.label
    with pytest.raises(ConfigError, match="min_side"):
        load(RECIPES / "clip_digits_varres_packed.yaml", ["data.min_side=100"])
    with pytest.raises(ConfigError, match="allowed keys in 'data.batching'"):
        load(RECIPES / "clip_digits_varres_packed.yaml", ["data.batching.layuot=pack"])


def test_task_needs_a_batching_section(tmp_path):
    recipe = load(RECIPES / "clip_digits.yaml", [*TINY, "task=contrastive_varres"])
    with pytest.raises(ValueError, match="batching"):
        registry.build("task", recipe.task, recipe, RunDir.create(tmp_path / "r", "", "x"))


def test_layouts_give_the_same_embeddings(tmp_path):
    """pack, bucket and pad lay the same images out differently; the embeddings must agree.
    (smart resize keeps the sizes varied, so packing pads less than one image per row.)"""
    task = _task(tmp_path, extra=["data.batching.resize=smart", "data.batching.max_patches=64"])
    samples = [task.clip.data.test[i] for i in range(12)]
    task.model.eval()
    embs, fills = {}, {}
    for layout in ("pack", "bucket", "pad"):
        task.spec.layout = layout
        batch = task.make_batch(samples, step=0, train=True)
        with torch.no_grad():
            embs[layout] = task.encode_images(batch)
        fills[layout] = batch.packed.fill()
    torch.testing.assert_close(embs["bucket"], embs["pack"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(embs["pad"], embs["pack"], atol=1e-5, rtol=1e-5)
    assert fills["pack"] > fills["pad"]
    for s, g in zip(samples, batch.packed.grids):  # aspect-preserving, within the budget
        h, w = s.media.shape[-2:]
        mp = task.spec.max_patches
        assert g == tuple(x // 4 for x in budget_size((h, w), 4, mp, task.spec.resize)) and g[0] * g[1] <= mp


def test_fixed_resize_stacks_squares(tmp_path):
    task = _task(tmp_path, extra=["data.batching.resize=fixed"])
    batch = task.make_batch([task.clip.data.test[i] for i in range(5)])
    assert batch.packed is None and batch.images.shape == (5, 1, 16, 16)
    assert task.encode_images(batch).shape == (5, 64)


def test_curriculum_budgets_follow_the_stages(tmp_path):
    task = _task(tmp_path, "clip_digits_res_curriculum.yaml", ["train.steps=30"])
    samples = [task.clip.data.train[i] for i in range(40)]

    def grids(step):
        return task.make_batch(samples, step=step, train=True).packed.grids

    low, mid, high = task.spec.schedule.resolutions  # patch budgets
    early = grids(0)  # stage 1: every image at the low budget (x <= 1.2^2 multi-scale)
    assert max(r * c for r, c in early) <= low * 1.2**2 + 1
    late = task.make_batch(samples, step=29, train=True)  # stage 3: 30/40/30 of low/mid/high
    assert late.mean_budget == pytest.approx((12 * low + 16 * mid + 12 * high) / 40)
    assert max(r * c for r, c in late.packed.grids) > low * 1.2**2
    assert grids(5) == grids(5)  # reproducible by (seed, step)
    evalb = task.make_batch(samples)  # evaluation: max_patches, no multi-scale
    mp = task.spec.max_patches
    assert evalb.mean_budget == mp and evalb.packed.grids == [
        tuple(x // 4 for x in budget_size(tuple(s.media.shape[-2:]), 4, mp, task.spec.resize)) for s in samples
    ]
    with pytest.raises(ValueError, match="resize: smart"):
        _task(tmp_path / "b", "clip_digits_res_curriculum.yaml", ["data.batching.resize=fixed"])
    assert ResolutionScheduleSpec().build().proportions(0.9) == [0.3, 0.4, 0.3]


@pytest.mark.parametrize("layout", ["pack", pytest.param("bucket", marks=pytest.mark.slow)])
def test_resume_across_an_epoch_is_bit_exact(layout, tmp_path):
    """A resumed curriculum run draws the same batches at the same curriculum steps, drops the same
    tokens and counts the same tokens as one never stopped (the loader's epoch and step counter,
    the token-dropping generator and the contrastive state travel with the checkpoint)."""
    from resume_helpers import assert_same_checkpoint, stopped_and_resumed

    over = [*TINY, "train.batch_size=256", "train.steps=8", "train.eval_every=0", "train.log_every=1",
            "train.checkpoint_every=3", "train.keep_checkpoints=3", "data.batching.token_drop=0.2",
            f"data.batching.layout={layout}"]
    ref, res = stopped_and_resumed(RECIPES / "clip_digits_res_curriculum.yaml", over, tmp_path, at=6, end=8)
    state = json.loads((ref / "checkpoints" / "step_00000006" / "trainer_state.json").read_text())
    assert state["trainer"]["data"]["epoch"] >= 1  # the resume point is past an epoch boundary
    assert_same_checkpoint(ref, res, 8)
    ra, rb = (json.loads((r / "results.json").read_text()) for r in (ref, res))
    for k in ("train_real_token_share", "train_tokens_per_image", "zeroshot_top1"):
        assert ra[k] == rb[k], k
    la, lb = ([json.loads(x) for x in (r / "metrics.jsonl").read_text().splitlines()] for r in (ref, res))
    budgets = lambda logs: [x["patch_budget"] for x in logs if "patch_budget" in x][-2:]  # noqa: E731
    assert budgets(la) == budgets(lb)


@pytest.mark.parametrize("layout", ["pack", "bucket"])
def test_ranks_split_each_global_batch_and_its_budgets(tmp_path, layout):
    """Under torchrun each rank builds its share (positions rank, rank + W, ...) of the global batch
    that one process would draw, with the budgets the curriculum gave the whole global batch."""
    from modalab.tasks.varres import VarResLoader

    task = _task(tmp_path, "clip_digits_res_curriculum.yaml", ["train.steps=30", f"data.batching.layout={layout}"])
    one = VarResLoader(task, 32, seed=0)
    ranks = [VarResLoader(task, 32, seed=0, rank=r, world=2) for r in (0, 1)]
    for loader in (one, *ranks):
        loader.set_epoch(0)
        loader.step = 12  # the second stage of the curriculum (60/30/10): mixed budgets
    whole = next(iter(one))
    parts = [next(iter(r)) for r in ranks]
    assert [len(p) for p in parts] == [16, 16]
    assert sorted(parts[0].ids + parts[1].ids) == sorted(whole.ids)
    assert parts[0].ids == whole.ids[0::2] and parts[1].ids == whole.ids[1::2]
    budgets = task.train_budgets(32, 12)
    assert len(set(budgets)) > 1  # the test means something: the batch mixes budgets
    for r, part in enumerate(parts):
        assert part.mean_budget == pytest.approx(sum(budgets[r::2]) / 16)
    assert (parts[0].mean_budget + parts[1].mean_budget) / 2 == pytest.approx(whole.mean_budget)
    # each rank's images are exactly the single-process batch's (same size, same pixels)
    sizes = lambda b: [tuple(g) for g in b.packed.grids]  # noqa: E731
    assert sorted(sizes(parts[0]) + sizes(parts[1])) == sorted(sizes(whole))


def test_batch_must_split_evenly_over_the_processes(tmp_path):
    from modalab.tasks.varres import VarResLoader

    with pytest.raises(ValueError, match="train.batch_size=33 must split evenly over 2 process"):
        VarResLoader(_task(tmp_path), 33, seed=0, rank=0, world=2)


def test_token_dropping_draws_per_step_and_rank(tmp_path):
    """The dropping stream is a function of (seed, step, rank): the same batch at the same step drops
    the same tokens (a resume needs no generator state); another rank or step drops others."""
    task = _task(tmp_path, extra=["data.batching.token_drop=0.5", "data.augment=false"])
    samples = [task.data.train[i] for i in range(8)]
    def kept():  # the (row, col) positions of the patches that survived, per slot
        packed = task.make_batch(samples, step=3, train=True).packed
        return torch.stack([packed.rows, packed.cols])

    first = kept()
    assert torch.equal(first, kept())
    task.rank = 1
    assert not torch.equal(first, kept())
