"""The in-house feature network: learns the digits, is cached by config + data, and separates
real digits from corrupted ones in FID."""

import pytest
import torch

from modalab.data.dataset import stratified_split
from modalab.data.sources.digits import load_digit_images
from modalab.eval.feature_net import FeatureCNN, FeatureNetConfig, cached_feature_net, train_feature_net
from modalab.eval.generation import fid, real_floor

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def digits():
    images, labels = load_digit_images(16)  # (1797, 1, 16, 16) in [0, 1]
    tr, te = stratified_split(labels.tolist(), len(labels), 0.25, 0)
    return images[tr], labels[tr], images[te], labels[te]


@pytest.fixture(scope="module")
def net_and_dir(digits, tmp_path_factory):
    d = tmp_path_factory.mktemp("featcache")
    return cached_feature_net(digits[0], digits[1], FeatureNetConfig(steps=200), d), d


def test_feature_net_classifies_held_out_digits(digits, net_and_dir):
    net = net_and_dir[0]
    with torch.no_grad():
        acc = float((net(digits[2]).argmax(1) == digits[3]).float().mean())
    assert acc > 0.9
    assert net.embed(digits[2]).shape == (len(digits[2]), 32) and net.embed(digits[2]).dtype == torch.float64


def test_cache_reloads_the_same_weights_and_keys_on_config(digits, net_and_dir):
    net, d = net_and_dir
    files = list(d.glob("feature_net_*.safetensors"))
    assert len(files) == 1
    again = cached_feature_net(digits[0], digits[1], FeatureNetConfig(steps=200), d)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), again.state_dict().values()))
    assert torch.equal(net.embed(digits[2][:5]), again.embed(digits[2][:5]))
    cached_feature_net(digits[0], digits[1], FeatureNetConfig(steps=2), d)
    assert len(list(d.glob("feature_net_*.safetensors"))) == 2  # another config, another file


def test_training_is_deterministic_per_seed(digits):
    a = train_feature_net(digits[0][:64], digits[1][:64], FeatureNetConfig(steps=3, width=4))
    b = train_feature_net(digits[0][:64], digits[1][:64], FeatureNetConfig(steps=3, width=4))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_fid_on_features_ranks_corruption(digits, net_and_dir):
    net = net_and_dir[0]
    real = net.embed(digits[2])  # (450, 64) test split
    floor = real_floor(real, seed=0)
    g = torch.Generator().manual_seed(0)
    noisy = (digits[0][:450] + 0.3 * torch.randn(digits[0][:450].shape, generator=g)).clamp(0, 1)
    blank = torch.zeros_like(digits[0][:450]) + 0.01 * torch.rand(digits[0][:450].shape, generator=g)
    f_train = fid(real, net.embed(digits[0][:450]))  # other real digits
    f_noisy, f_blank = fid(real, net.embed(noisy)), fid(real, net.embed(blank))
    assert f_train < f_noisy < f_blank
    # the floor (225 vs 225) sits at the FID of other real digits at the same sample size
    f_same_size = fid(real[:225], net.embed(digits[0][:225]))
    assert 0.5 * f_same_size < floor < 2 * f_same_size and floor < f_noisy


def test_feature_net_rejects_wrong_channels():
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        FeatureCNN(1, 10).features(torch.zeros(2, 3, 8, 8))
