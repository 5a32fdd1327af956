"""FSDP shards every block type of the toolkit (issue 22): ``train/dist.shard_model`` with
``layers.block_types()`` wraps each registered block of each model family as its own FSDP unit,
and a sharded forward/backward (gloo, 2 processes, same batch on both ranks) gives the
single-process loss and gradients."""

from __future__ import annotations

import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from modalab.layers import Block, block_types
from modalab.train.dist import shutdown

# the spawn test (~40 s under load: two processes import torch and build eight models) is slow



def _models() -> dict[str, tuple[nn.Module, tuple]]:
    """name -> (float64 model, inputs); every model holds at least one registered block type."""
    from modalab.audio.whisper_encoder import WhisperStyleEncoder
    from modalab.fusion.agreement import agreement_model
    from modalab.fusion.resampler import PerceiverResampler
    from modalab.models.unified import UnifiedTransformer
    from modalab.text.decoder import TextDecoder
    from modalab.video.merging import ToMeEncoder
    from modalab.video.temporal import DividedEncoder

    torch.manual_seed(0)
    kw = dict(image_size=8, channels=1, patch=4, vocab_size=20, context_length=6, dim=8, depth=2, heads=2)
    images, tokens = torch.randn(2, 1, 8, 8), torch.tensor([[3, 4, 5, 0, 0, 0], [7, 8, 9, 10, 11, 12]])
    out = {
        "gated_cross_attention": (agreement_model("gated_cross_attention", **kw), (images, tokens)),
        "mome": (agreement_model("mome", **kw), (images, tokens)),
        "whisper": (WhisperStyleEncoder(n_mels=4, dim=8, depth=2, heads=2, max_frames=20), (torch.randn(2, 4, 12),)),
        "tome": (ToMeEncoder(8, 2, 2, r=2), (torch.randn(2, 2, 4, 8),)),
        "divided": (DividedEncoder(8, 2, 2), (torch.randn(2, 2, 3, 8),)),
        "perceiver": (PerceiverResampler(8, 8, depth=2, heads=2, head_dim=4, num_latents=3), (torch.randn(2, 5, 8),)),
        "decoder": (TextDecoder(20, dim=8, depth=2, heads=2, max_len=8), (torch.randint(1, 20, (2, 6)),)),
        "unified": (UnifiedTransformer(10, 6, 4, dim=8, depth=2, heads=2, max_text=4), (torch.randint(0, 20, (2, 9)),)),
    }
    for m, _ in out.values():  # non-zero gates and projections, so every block changes the output
        with torch.no_grad():
            for p in m.parameters():
                p.add_(0.05 * torch.randn(p.shape))
    return {k: (m.double(), tuple(x.double() if x.is_floating_point() else x for x in xs))
            for k, (m, xs) in out.items()}


def _loss(name: str, model: nn.Module, xs: tuple) -> torch.Tensor:
    y = model.logits(*xs) if name == "unified" else model(*xs)
    y = y[0] if isinstance(y, tuple) else y
    return (y.double() ** 2).mean()


def _grads(model: nn.Module) -> dict[str, torch.Tensor]:
    from modalab.train.dist import full_tensor

    return {n: full_tensor(p.grad).detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    from torch.distributed.fsdp import FSDPModule

    from modalab.train.dist import DistEnv, average_gradients, is_sharded, shard_model

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    clean = False
    try:
        res = {}
        for name, (model, xs) in _models().items():
            types = block_types()
            blocks = [m for m in model.modules() if isinstance(m, types)]
            kinds = sorted({type(m).__name__ for m in blocks})
            shard_model(model, types)
            loss = _loss(name, model, xs)
            loss.backward()
            average_gradients([p for p in model.parameters() if not is_sharded(p)], DistEnv(rank, world))
            res[name] = {
                "kinds": kinds,
                "wrapped": all(isinstance(m, FSDPModule) for m in blocks),
                "sharded": all(is_sharded(p) for m in blocks for p in m.parameters() if p.ndim > 0),
                "loss": loss.detach(), "grads": _grads(model),
            }
        torch.save(res, os.path.join(out_dir, f"{rank}.pt"))
        clean = True
    finally:
        shutdown(sync=clean)


def test_every_block_type_is_registered():
    from modalab.fusion.cross_attention import GatedCrossAttentionBlock
    from modalab.fusion.mome import MoMEBlock, RoutedBlock
    from modalab.fusion.resampler import PerceiverLayer
    from modalab.text.decoder import DecoderBlock
    from modalab.video.merging import ToMeBlock
    from modalab.video.temporal import DividedSpaceTimeBlock

    types = block_types()
    for cls in (Block, DecoderBlock, DividedSpaceTimeBlock, ToMeBlock, MoMEBlock, RoutedBlock,
                GatedCrossAttentionBlock, PerceiverLayer):
        assert issubclass(cls, types), cls


@pytest.mark.slow
@pytest.mark.distributed
def test_fsdp_wraps_every_block_type_and_matches_single_process():
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_worker, args=(2, os.path.join(tmp, "init"), tmp), nprocs=2, join=True)
        r0, r1 = (torch.load(os.path.join(tmp, f"{r}.pt"), weights_only=False) for r in range(2))
    expected_kinds = {
        "gated_cross_attention": ["Block", "GatedCrossAttentionBlock"], "mome": ["MoMEBlock"],
        "whisper": ["Block"], "tome": ["ToMeBlock"], "divided": ["DividedSpaceTimeBlock"],
        "perceiver": ["PerceiverLayer"], "decoder": ["DecoderBlock"], "unified": ["Block"],
    }
    for name, (model, xs) in _models().items():
        got = r0[name]
        assert got["kinds"] == expected_kinds[name], name
        assert got["wrapped"] and got["sharded"], name
        loss = _loss(name, model, xs)
        loss.backward()
        ref = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
        for r in (r0, r1):
            torch.testing.assert_close(r[name]["loss"], loss.detach(), rtol=0, atol=1e-10)
            assert r[name]["grads"].keys() == ref.keys(), name
            for n, g in ref.items():
                torch.testing.assert_close(r[name]["grads"][n], g, rtol=0, atol=1e-10, msg=f"{name} {n}")
