"""Exact accumulation: GradCache over 4 micro-batches of 32 equals one batch of 128."""

import pytest
import torch

from modalab.align.objectives_clip import TiledContrastive
from modalab.data.sample import Batch
from modalab.models.two_tower import TwoTower
from modalab.text.encoder import TextTransformer
from modalab.train.gradcache import gradcache_accumulate, naive_accumulate, split_batch
from modalab.train.precision import autocast
from modalab.vision.vit import VisionTransformer


class TinyTask:
    """The two hooks GradCache needs, over a tiny two-tower model (FLIP masking on: uses the RNG)."""

    def __init__(self, kind: str) -> None:
        vit = VisionTransformer(image_size=8, patch_size=4, in_channels=1, width=16, depth=1, heads=2,
                                patch_dropout=0.25)
        txt = TextTransformer(vocab_size=20, context_length=6, width=16, depth=1, heads=2)
        self.model = TwoTower(vit, txt, torch.nn.Linear(16, 8, bias=False), torch.nn.Linear(16, 8, bias=False),
                              init_logit_bias=-2.0 if kind == "siglip" else None)
        self.loss = TiledContrastive(kind, impl="naive")

    def embed_batch(self, b: Batch):
        out = self.model(b.images, b.tokens)
        return out["image_emb"], out["text_emb"]

    def loss_from_embeddings(self, emb, b: Batch):
        return self.loss(*emb, logit_scale=self.model.logit_scale.exp(), logit_bias=self.model.logit_bias), {}

    def step(self, b: Batch):
        return self.loss_from_embeddings(self.embed_batch(b), b)


def _batch(n: int = 128) -> Batch:
    g = torch.Generator().manual_seed(1)
    return Batch([f"s{i}" for i in range(n)], torch.randn(n, 1, 8, 8, generator=g), None,
                 torch.randint(1, 20, (n, 6), generator=g), None)


def _grads(model) -> torch.Tensor:
    return torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None])


@pytest.mark.parametrize("kind", ["info_nce", "siglip"])
def test_gradcache_equals_full_batch(kind):
    task, batch = TinyTask(kind), _batch()
    amp = lambda: autocast("fp32", torch.device("cpu"))  # noqa: E731
    torch.manual_seed(5)
    state = torch.get_rng_state()
    # reference: the 4 micro-batches under the RNG draws GradCache's first pass makes, but
    # one graph and one loss over all 128 rows
    embs = []
    for mb in split_batch(batch, 4):
        embs.append(task.embed_batch(mb))
    after_ref = torch.get_rng_state()
    full = tuple(torch.cat([e[k] for e in embs]) for k in range(2))
    loss_ref, _ = task.loss_from_embeddings(full, batch)
    loss_ref.backward()
    ref = _grads(task.model).clone()
    task.model.zero_grad(set_to_none=True)
    torch.set_rng_state(state)
    loss, _ = gradcache_accumulate(task.embed_batch, task.loss_from_embeddings, batch,
                                   split_batch(batch, 4), lambda t: t.backward(), amp, torch.device("cpu"))
    got = _grads(task.model)
    assert torch.equal(torch.get_rng_state(), after_ref)  # same RNG consumption as the reference
    assert abs(loss.item() - loss_ref.item()) < 1e-6
    rel = ((got - ref).norm() / ref.norm()).item()
    assert rel < 1e-5, rel


def test_gradcache_equals_one_batch_without_randomness():
    task, batch = TinyTask("info_nce"), _batch()
    task.model.image_encoder.patch_dropout = None
    amp = lambda: autocast("fp32", torch.device("cpu"))  # noqa: E731
    loss_ref, _ = task.step(batch)  # one plain forward over 128
    loss_ref.backward()
    ref = _grads(task.model).clone()
    task.model.zero_grad(set_to_none=True)
    gradcache_accumulate(task.embed_batch, task.loss_from_embeddings, batch, split_batch(batch, 4),
                         lambda t: t.backward(), amp, torch.device("cpu"))
    assert ((_grads(task.model) - ref).norm() / ref.norm()).item() < 1e-5
    # naive accumulation is a different objective: each micro-batch sees 31 negatives, not 127
    task.model.zero_grad(set_to_none=True)
    naive_accumulate(task.step, split_batch(batch, 4), lambda t: t.backward(), amp)
    assert ((_grads(task.model) - ref).norm() / ref.norm()).item() > 1e-2


def test_split_batch_errors_and_fields():
    b = _batch(12)
    parts = split_batch(b, 3)
    assert [len(p) for p in parts] == [4, 4, 4] and parts[1].ids[0] == "s4"
    assert torch.equal(parts[2].tokens, b.tokens[8:])
    with pytest.raises(ValueError, match="accum_steps=5 does not divide"):
        split_batch(b, 5)
