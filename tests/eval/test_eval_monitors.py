"""AlignmentMonitor flags collapse, drifting modalities, tau out of range and a clamped scale,
and stays quiet on healthy, aligned embeddings."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from modalab.eval.monitors import AlignmentMonitor


def healthy(n=64, d=16, seed=0, noise=0.3):
    g = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(n, d, generator=g), dim=1)
    txt = F.normalize(img + noise * torch.randn(n, d, generator=g), dim=1)
    return img, txt


def test_healthy_embeddings_raise_no_warning_and_metrics_are_flat_floats():
    mon = AlignmentMonitor()
    img, txt = healthy()
    labels = torch.arange(64) % 10
    metrics, warnings = mon(img, txt, labels, logit_scale=1 / 0.07, grad_norm=torch.tensor(0.5))
    assert warnings == []
    assert all(k.startswith("monitor/") and isinstance(v, float) for k, v in metrics.items())
    for key in ("erank_image", "modality_gap", "alignment", "uniformity_text", "sim_pos_q0.5",
                "sim_neg_q0.95", "tau", "grad_norm", "std_text_mean"):
        assert f"monitor/{key}" in metrics
    assert metrics["monitor/sim_margin"] > 0.5
    img2, txt2 = healthy(seed=1)
    assert mon(img2, txt2, logit_scale=1 / 0.05).warnings == []  # a later step, still healthy


def test_constant_embeddings_are_flagged_as_collapse():
    mon = AlignmentMonitor()
    img, txt = healthy()
    const = F.normalize(torch.ones(64, 16), dim=1)
    metrics, warnings = mon(const, txt)
    assert metrics["monitor/erank_image"] < 1.0001
    assert any("image embeddings look collapsed" in w for w in warnings)
    assert not any("text embeddings look collapsed" in w for w in warnings)


def test_drifting_modalities_are_flagged():
    mon = AlignmentMonitor(gap_factor=1.5)
    img, txt = healthy()
    assert mon(img, txt).warnings == []
    direction = F.normalize(torch.randn(16, generator=torch.Generator().manual_seed(5)), dim=0)
    flagged = []
    for shift in (0.0, 0.5, 1.0, 2.0):
        drifted = F.normalize(txt + shift * direction, dim=1)
        _, warnings = mon(img, drifted)
        flagged.append(any("drift apart" in w for w in warnings))
    assert flagged[0] is False and flagged[-1] is True
    assert flagged == sorted(flagged)  # once drifting, it stays flagged as the gap grows


def test_temperature_and_clamp_warnings_and_state():
    mon = AlignmentMonitor()
    img, txt = healthy()
    _, warnings = mon(img, txt, logit_scale=5.0)
    assert any("tau=0.2000 is outside" in w for w in warnings)
    _, warnings = mon(img, txt, logit_scale=100.0)
    assert any("at its clamp" in w for w in warnings)
    resumed = AlignmentMonitor()
    resumed.load_state_dict(mon.state_dict())
    assert resumed.first_gap == mon.first_gap
