"""build_optimizer's AdamW uses the multi-tensor (foreach) update on CPU too: it must give the same
parameters, bit for bit, as the per-tensor loop torch uses by default on CPU."""

import copy

import torch
from torch import nn

from modalab.train.optim import build_optimizer, param_groups


def test_foreach_adamw_is_bit_identical_to_the_per_tensor_loop():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.LayerNorm(32), nn.GELU(), nn.Linear(32, 4))
    ref = copy.deepcopy(model)
    fast_opt = build_optimizer("adamw", param_groups(model, 1e-2, 0.05))
    ref_opt = torch.optim.AdamW(param_groups(ref, 1e-2, 0.05), betas=(0.9, 0.98), eps=1e-6, foreach=False)
    assert fast_opt.defaults["foreach"] is True
    for step in range(25):
        x = torch.randn(64, 16, generator=torch.Generator().manual_seed(step))
        for m, opt in ((model, fast_opt), (ref, ref_opt)):
            opt.zero_grad(set_to_none=True)
            m(x).square().mean().backward()
            opt.step()
    for p, q in zip(model.parameters(), ref.parameters()):
        assert torch.equal(p, q)
