"""Loss-curve stability (eval/curve_stability.py) against a plain loop; peak RSS (eval/peak_memory.py)
sees a tensor allocation of known size."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modalab.eval.curve_stability import count_spikes, final_loss
from modalab.eval.peak_memory import peak_rss_mib


def _spikes_ref(a: list[float], window: int, ratio: float) -> int:
    n = 0
    for i in range(window, len(a)):
        prev = sorted(a[i - window : i])
        mid = len(prev) // 2
        med = prev[mid] if len(prev) % 2 else (prev[mid - 1] + prev[mid]) / 2
        n += a[i] > ratio * med
    return n


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_count_spikes_matches_a_plain_loop(seed):
    rng = np.random.default_rng(seed)
    a = (np.exp(-np.arange(300) / 80) + 0.1 + 0.05 * rng.random(300)).tolist()
    for i in rng.choice(300, 6, replace=False):
        a[i] *= 3.0
    for window, ratio in ((5, 1.2), (20, 1.5)):
        assert count_spikes(a, window, ratio) == _spikes_ref(a, window, ratio)
    assert count_spikes(np.linspace(5, 1, 100)) == 0  # a smooth decrease has no spike
    assert count_spikes([1.0] * 30 + [float("nan")]) == 1
    with pytest.raises(ValueError, match="ratio"):
        count_spikes(a, 5, 1.0)


def test_final_loss_is_the_tail_mean():
    a = list(range(100))
    assert final_loss(a, tail=0.05) == np.mean(a[-5:]) and final_loss([3.0]) == 3.0
    with pytest.raises(ValueError, match="non-empty"):
        final_loss([])


def test_peak_rss_sees_a_64_mib_tensor():
    def work() -> float:
        t = torch.ones(64 * 2**20 // 4)  # 64 MiB of float32, touched
        return float(t[-1])

    out, mib = peak_rss_mib(work)
    assert out == 1.0 and 56 <= mib <= 200, mib
    _, small = peak_rss_mib(lambda: None)
    assert small < 16, small
