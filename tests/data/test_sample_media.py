"""``Sample.media`` carries images, waveforms and videos; the old name ``image`` still works."""

import pytest
import torch

from modalab.data.sample import Sample, collate


def test_media_holds_any_signal_and_collates() -> None:
    wave = Sample("w0", media=torch.zeros(16000), text="a beep")
    assert wave.media.shape == (16000,) and wave.meta == {} and wave.label is None
    batch = collate([wave, Sample("w1", media=torch.ones(16000), text="a chirp")])
    assert batch.images.shape == (2, 16000) and batch.texts == ["a beep", "a chirp"]
    assert Sample("a", meta={"k": 1}) == Sample("a", meta={"k": 1})
    assert Sample("a").meta is not Sample("a").meta  # no shared default dict


def test_old_name_warns_and_still_works() -> None:
    x = torch.ones(1, 8, 8)
    with pytest.warns(DeprecationWarning, match="media"):
        s = Sample("d", image=x, label=3)
    assert s.media is x and s.label == 3
    with pytest.warns(DeprecationWarning, match="Sample.media"):
        assert s.image is x
    with pytest.raises(TypeError, match="not both"):
        Sample("d", media=x, image=x)
