"""Shared by the attention parity tests: load an old module into its migrated version and compare
outputs and gradients in float64."""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

ATOL = 1e-6


def close(a: Tensor, b: Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=0.0, atol=ATOL)


def seeded_(module: nn.Module, seed: int) -> nn.Module:
    """Distinct random values in every parameter (zero-initialised biases too)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.3)
    return module


def check_parity(old: nn.Module, new: nn.Module, run, inputs: list[Tensor]) -> None:
    """Load ``old`` into ``new`` strictly; compare ``run(module, *inputs)`` and all gradients."""
    new.load_state_dict(old.state_dict(), strict=True)
    outs, grads = [], []
    for model in (old, new):
        xs = [x.clone().requires_grad_(x.is_floating_point()) for x in inputs]
        model.zero_grad()
        out = run(model, *xs)
        (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view(out.shape)).sum().backward()
        outs.append(out.detach())
        grads.append([x.grad for x in xs if x.requires_grad])
    close(outs[1], outs[0])
    for g_new, g_old in zip(grads[1], grads[0]):
        close(g_new, g_old)
    # the old parameter gradients, renamed and split like the weights, equal the new ones
    mapped = copy.deepcopy(new)
    zero = torch.zeros_like  # a parameter the forward does not use (null_cond) has no gradient
    mapped.load_state_dict({k: zero(p) if p.grad is None else p.grad for k, p in old.named_parameters()}
                           | dict(old.named_buffers()), strict=True)
    for name, p in new.named_parameters():
        close(zero(p) if p.grad is None else p.grad, mapped.get_parameter(name))
