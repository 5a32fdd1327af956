"""``train.ddp`` options (find_unused auto probe, static graph, bucket views and sizes, batched
grad copy, the loss carried in the gradient all-reduce) keep DDP exact.

Two gloo processes each take half of a float64 batch; with every option set their reduced
gradients must equal one process's gradients on the whole batch (to 1e-12), the probe must drop
``find_unused_parameters`` only when every parameter is used, and the loss read back from the
gradient all-reduce must equal a plain all-reduce of the losses, bit for bit.
"""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from modalab.train.ddp import PROBE_STEPS, DataParallelStep, LocalStep, reached_parameters
from modalab.train.dist import shutdown
from modalab.train.gradcache import gradcache_accumulate, split_batch

STEPS = PROBE_STEPS + 2


class Net(nn.Module):
    def __init__(self, spare: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.enc = nn.Sequential(nn.Linear(6, 32), nn.Tanh(), nn.Linear(32, 4)).double()
        self.scale = nn.Parameter(torch.tensor(2.0, dtype=torch.float64))
        self.spare = nn.Linear(3, 3).double() if spare else None  # never used

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.enc(x)


def _loss(model: Net, emb: torch.Tensor) -> torch.Tensor:
    return (model.scale * emb).pow(2).mean() + emb.mean()


def _batch() -> torch.Tensor:
    return torch.randn(8, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64)


def _step(model: Net, sync, x: torch.Tensor, mode: str) -> float:
    model.zero_grad(set_to_none=True)
    if mode == "gradcache":  # GradCache's last pass never reaches the scale: auto must keep the walk
        loss, _ = gradcache_accumulate(model.embed, lambda e, b: (_loss(model, e), {}), x, split_batch(x, 2),
                                       lambda t: t.backward(), __import__("contextlib").nullcontext,
                                       torch.device("cpu"), sync)
    else:
        loss, _ = sync.call(lambda b: (_loss(model, model.embed(b)), {}), x)
        loss.backward()
    if isinstance(sync, DataParallelStep):
        sync.after_backward()
    return float(loss.detach().float())  # what the engine logs and reduces


def _grads(model: nn.Module) -> dict:
    return {n: None if p.grad is None else p.grad.tolist() for n, p in model.named_parameters()}


CASES = {  # name -> (spare parameter, mode, DataParallelStep keyword arguments)
    "auto": (False, "plain", dict(find_unused="auto", loss_in_bucket=True)),
    "auto, static, views, batched copy, 6 small buckets": (
        False, "plain", dict(find_unused="auto", static_graph=True, bucket_view=True, batched_copy=True,
                             bucket_mb=1e-3, loss_in_bucket=True)),
    "auto, DDP's default buckets": (False, "plain", dict(find_unused="auto", bucket_mb=None, loss_in_bucket=True)),
    "auto with an unused parameter": (True, "plain", dict(find_unused="auto", loss_in_bucket=True)),
    "auto under GradCache": (False, "gradcache", dict(find_unused="auto")),
    "off": (False, "plain", dict(find_unused=False, static_graph=True, loss_in_bucket=True)),
}


def _work(rank: int) -> dict:
    x = _batch()[rank * 4:(rank + 1) * 4]
    out = {}
    for name, (spare, mode, kw) in CASES.items():
        model = Net(spare)
        step = DataParallelStep(model, **{"bucket_mb": 25.0, **kw})
        got = {"grads": [], "means": [], "find_unused": [], "builds": 0}
        for _ in range(STEPS):
            loss = _step(model, step, x, mode)
            got["grads"].append(_grads(model))
            got["find_unused"].append(step.find_unused)
            if step.loss is not None:
                ref = torch.tensor([loss, 1.0], dtype=torch.float64)
                dist.all_reduce(ref)
                got["means"].append((step.loss_mean([loss, 1.0]), (ref / 2).tolist()))
        got["builds"] = step.builds
        got["decision"] = getattr(step, "decision", None)
        out[name] = got
    model = Net(False).to(torch.bfloat16)  # a 16-bit bucket has no exact float32 slot
    step = DataParallelStep(model, find_unused="auto", loss_in_bucket=True)
    loss = _step(model, step, x.to(torch.bfloat16), "plain")
    ref = torch.tensor([loss, 1.0], dtype=torch.float64)
    dist.all_reduce(ref)
    in_bucket = step.loss.got is not None
    out["bf16"] = (step.loss_mean([loss, 1.0]), (ref / 2).tolist(), in_bucket)
    model = Net(True)  # find_unused off with a parameter left out: a clear error, not a hang
    step = DataParallelStep(model, find_unused=False)
    try:
        _step(model, step, x, "plain")
        out["error"] = None
    except RuntimeError as e:
        out["error"] = str(e)
    return out


def _worker(rank: int, port: int, q) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    clean = False
    try:  # the DDP wrappers live in _work only, so shutdown() finds nothing left holding the group
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


@pytest.fixture(scope="module")
def two_ranks():
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, port, q)) for r in range(2)]
    for p in procs:
        p.start()
    results = dict(q.get(timeout=180) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0, results
    return results


@pytest.mark.parametrize("name", list(CASES))
def test_options_keep_gradients_exact(two_ranks, name):
    spare, mode, _ = CASES[name]
    model = Net(spare)
    _step(model, LocalStep(), _batch(), mode)
    ref = {n: None if p.grad is None else p.grad for n, p in model.named_parameters()}
    for rank in (0, 1):
        got = two_ranks[rank]
        assert isinstance(got, dict), got
        for step_grads in got[name]["grads"]:
            for n, g in ref.items():
                h = step_grads[n]
                if g is None:
                    assert h is None, (name, n)
                else:  # a mean loss: the average of the two half-batch gradients is the whole one
                    assert torch.allclose(torch.tensor(h, dtype=torch.float64), g, rtol=0, atol=1e-12), (name, n)


def test_probe_drops_the_graph_walk_only_when_every_parameter_is_used(two_ranks):
    for rank in (0, 1):
        got = two_ranks[rank]
        used = got["auto"]
        assert used["find_unused"] == [True] * (PROBE_STEPS - 1) + [False] * (STEPS - PROBE_STEPS + 1)
        assert used["builds"] == 2 and used["decision"]["find_unused_parameters"] is False
        spare = got["auto with an unused parameter"]
        assert spare["find_unused"] == [True] * STEPS and spare["builds"] == 1
        assert "spare.weight" in spare["decision"]["reason"]
        gc = got["auto under GradCache"]
        assert gc["find_unused"] == [True] * STEPS and "scale" in gc["decision"]["reason"]
        assert got["off"]["builds"] == 1 and got["off"]["find_unused"] == [False] * STEPS
        assert "spare.weight" in got["error"] and "find_unused_parameters=true" in got["error"]


def test_loss_in_bucket_equals_a_plain_all_reduce(two_ranks):
    for rank in (0, 1):
        for name, got in two_ranks[rank].items():
            if name == "bf16":
                assert got[0] == got[1] and got[2] is False, got  # the fallback all-reduce
            elif isinstance(got, dict) and CASES[name][2].get("loss_in_bucket"):
                assert len(got["means"]) == STEPS
                for mine, plain in got["means"]:
                    assert mine == plain, (name, mine, plain)  # bit for bit


def test_reached_parameters_walks_nested_outputs():
    a, b, c = (nn.Parameter(torch.ones(2)) for _ in range(3))
    out = ({"x": (a * 2).sum()}, [b.exp()], torch.zeros(1), c)
    assert reached_parameters(out) == {id(a), id(b), id(c)}
    assert reached_parameters((a * 0).detach()) == set()
