"""VectorQuantizer under torch.distributed (gloo, 2 processes): codebooks stay identical and the
EMA step equals the single-process step on the concatenated batches."""

import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from modalab.train.dist import shutdown
from modalab.vision.quantizers import VectorQuantizer

pytestmark = [pytest.mark.distributed, pytest.mark.slow]  # ~40 s: spawns 2 processes


def _make(**kw) -> VectorQuantizer:
    torch.manual_seed(0)  # same initial codebook on every rank
    return VectorQuantizer(6, 3, decay=0.8, **kw).double().train()


def _data(rank: int) -> torch.Tensor:
    return torch.randn(10, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(rank))


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    clean = False
    try:
        ema = _make(kmeans_init=False)
        ema(_data(rank))
        torch.manual_seed(100 + rank)  # different local randomness: restarts must still agree
        full = _make(kmeans_init=True, dead_code_threshold=3.0)
        full(_data(rank))
        full(_data(rank) + 1)
        torch.save({"ema": ema.embed.clone(), "full": full.embed.clone()},
                   os.path.join(out_dir, f"{rank}.pt"))
        clean = True
    finally:
        shutdown(sync=clean)


def test_distributed_codebooks_agree_and_match_single_process():
    with tempfile.TemporaryDirectory() as tmp:
        init_file = os.path.join(tmp, "init")
        mp.spawn(_worker, args=(2, init_file, tmp), nprocs=2, join=True)
        r0, r1 = (torch.load(os.path.join(tmp, f"{r}.pt")) for r in range(2))
    assert torch.equal(r0["ema"], r1["ema"]) and torch.equal(r0["full"], r1["full"])
    single = _make(kmeans_init=False)
    single(torch.cat([_data(0), _data(1)]))
    assert torch.allclose(r0["ema"], single.embed, atol=1e-12)
