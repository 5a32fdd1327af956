"""DataParallelStep: DistributedDataParallel around calls that bypass the model's forward.

Two gloo processes each take half of a batch; their reduced gradients must equal one process's
gradients on the whole batch — for a plain step, naive accumulation and GradCache (both with
``no_sync`` on all but the last backward), and after a stage freezes a parameter.
"""

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from modalab.train.ddp import DataParallelStep, LocalStep
from modalab.train.dist import shutdown
from modalab.train.gradcache import gradcache_accumulate, naive_accumulate, split_batch


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.enc = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 4))
        self.scale = nn.Parameter(torch.tensor(2.0))  # used by the loss only (like a logit scale)
        self.unused = nn.Linear(3, 3)  # never used: its grad must stay None, as in one process

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.enc(x)


def _loss(model: Tiny, emb: torch.Tensor, full: int) -> torch.Tensor:
    # a sum over samples (divided by the global batch) so halves add up to the whole
    return (model.scale * emb).pow(2).sum() / full


def _batch() -> torch.Tensor:
    return torch.randn(8, 6, generator=torch.Generator().manual_seed(3))


def _grads(model: nn.Module) -> dict[str, torch.Tensor | None]:
    return {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}


def _run(model: Tiny, sync, x: torch.Tensor, mode: str, full: int) -> None:
    model.zero_grad(set_to_none=True)
    amp = __import__("contextlib").nullcontext
    if mode == "plain":
        loss = sync.call(lambda b: _loss(model, model.embed(b), full), x)
        loss.backward()
    elif mode == "naive":  # loss_i / n per micro-batch: undo the 1/n with n * ...
        n = 2
        naive_accumulate(lambda b: (n * _loss(model, model.embed(b), full), {}), split_batch(x, n),
                         lambda t: t.backward(), amp, sync)
    else:
        gradcache_accumulate(model.embed, lambda e, b: (_loss(model, e, full), {}), x, split_batch(x, 2),
                             lambda t: t.backward(), amp, torch.device("cpu"), sync)


def _work(rank: int) -> dict:
    x = _batch()[rank * 4:(rank + 1) * 4]
    model = Tiny()
    step = DataParallelStep(model)
    out = {}
    for mode in ("plain", "naive", "gradcache"):
        _run(model, step, x, mode, full=8)
        out[mode] = _grads(model)
    model.enc[0].weight.requires_grad_(False)  # a stage boundary
    out["rebuilt"] = step.refresh() and not step.refresh()
    out["uncovered"] = len(step.uncovered([p for p in model.parameters() if p.requires_grad]))
    _run(model, step, x, "plain", full=8)
    out["frozen"] = _grads(model)
    return {k: {n: None if g is None else g.tolist() for n, g in v.items()} if isinstance(v, dict) else v
            for k, v in out.items()}  # no shared-memory tensors through the queue


def _worker(rank: int, port: int, q) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    clean = False
    try:  # the DDP wrapper lives in _work only, so shutdown() finds nothing left holding the group
        q.put((rank, _work(rank)))
        clean = True
    except Exception as e:  # report instead of leaving the test waiting
        q.put((rank, repr(e)))
        raise
    finally:
        shutdown(sync=clean)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_step_equals_one_process_on_the_whole_batch():
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, port, q)) for r in range(2)]
    for p in procs:
        p.start()
    results = dict(q.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    model = Tiny()
    ref = {}
    for mode in ("plain", "naive", "gradcache"):
        _run(model, LocalStep(), _batch(), mode, full=8)
        ref[mode] = _grads(model)
    model.enc[0].weight.requires_grad_(False)
    _run(model, LocalStep(), _batch(), "plain", full=8)
    ref["frozen"] = _grads(model)
    for rank in (0, 1):
        got = results[rank]
        assert isinstance(got, dict), got
        assert got["rebuilt"] is True and got["uncovered"] == 0
        for mode in ("plain", "naive", "gradcache", "frozen"):
            for name, g in ref[mode].items():
                h = got[mode][name]
                h = None if h is None else torch.tensor(h)
                if g is None:
                    assert h is None, (mode, name)
                else:
                    # DDP averages: world x the half-batch gradient mean = the whole-batch gradient / 2
                    assert torch.allclose(2 * h, g, atol=1e-6), (mode, name, (2 * h - g).abs().max())
