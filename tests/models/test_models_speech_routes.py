"""speech_routes: CTC greedy decoding against a plain reference; each route's shapes and independence."""

import itertools

import torch

from modalab.models.speech_routes import SpeechRoutesConfig, build_speech_routes, ctc_greedy


def _reference(row: list[int]) -> list[int]:
    collapsed = [k for k, _ in itertools.groupby(row)]  # merge repeats, then drop blanks
    return [k - 1 for k in collapsed if k != 0]


def test_ctc_greedy_matches_plain_collapse():
    g = torch.Generator().manual_seed(0)
    best = torch.randint(0, 4, (64, 12), generator=g)
    assert ctc_greedy(best) == [_reference(r) for r in best.tolist()]
    assert ctc_greedy(torch.tensor([[1, 1, 0, 1, 2, 2, 0, 0]])) == [[0, 0, 1]]


def test_routes_build_with_their_own_parameters():
    cfg = SpeechRoutesConfig(name="speech_routes", encoder={"n_mels": 16, "dim": 16, "depth": 1, "max_frames": 200},
                             decoder={"dim": 16, "depth": 1, "max_len": 40})
    m = build_speech_routes(cfg, vocab_size=20, n_labels=10, seed=0)
    assert m.routes == ("cascade", "e2e", "e2e_prosody")
    wave = torch.randn(2, 16000) * 0.1
    assert m.asr(wave).shape == (2, 10, 11)  # 50 frames at 50 Hz pooled by the adapter's k = 5
    tokens = torch.randint(4, 20, (2, 6))
    assert m.e2e(wave, tokens).shape == (2, 6, 20) and m.e2e_prosody(wave, tokens).shape == (2, 6, 20)
    assert m.e2e_prosody.encoder.conv1.in_channels == 18 and m.e2e.encoder.conv1.in_channels == 16
    ids = [{id(p) for p in mod.parameters()} for mod in m.children()]
    assert all(not (a & b) for a, b in itertools.combinations(ids, 2))  # nothing shared
