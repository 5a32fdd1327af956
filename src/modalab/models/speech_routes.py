"""The chapter's two routes from speech to a language model (5.3.1), side by side in one module.

    cascade      waveform -> LogMel -> WhisperStyleEncoder -> avg-pool by the adapter's k -> CTC head
                 (B, T', n_words + 1)
                 -> greedy CTC transcript (words) -> TextDecoder prompted with the transcript
                 -> answer. The decoder is trained on GOLD transcripts (text only), as a cascade's
                 LM never sees audio; prosody cannot reach it.
    e2e          waveform -> LogMel -> encoder -> adapter (downsample k, project) -> TextDecoder with
                 the audio tokens as a prefix -> answer (``models.audio_lm.AudioLM``).
    e2e_prosody  as e2e, the front end adding relative F0 and energy channels
                 (``audio.prosody_frontend.LogMelProsody``).

Each route owns its parameters (nothing is shared), so training them on the summed loss with AdamW
trains each as if alone, apart from a global gradient clip (recipes set ``train.grad_clip: null``).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from modalab.audio.adapter import build_adapter
from modalab.audio.frontend import LogMel
from modalab.audio.prosody_frontend import LogMelProsody
from modalab.audio.whisper_encoder import WhisperStyleEncoder
from modalab.config import NamedBase
from modalab.models.audio_lm import AudioAdapterConfig, AudioEncoderConfig, AudioLM
from modalab.models.captioner import DecoderConfig
from modalab.registry import register
from modalab.text.decoder import TextDecoder

ROUTES = ("cascade", "e2e", "e2e_prosody")


class CTCRecognizer(nn.Module):
    """waveform (B, samples) -> log-probabilities (B, T', n_labels + 1); index 0 is the CTC blank.

    ``pool`` averages ``pool`` encoder frames (50 Hz) into one before the head, so the CTC reads the
    same token rate as the end-to-end adapter (k = 5: 10 Hz); fewer frames per label also shorten
    CTC's all-blank plateau.
    """

    def __init__(self, frontend: nn.Module, encoder: WhisperStyleEncoder, n_labels: int, pool: int = 1) -> None:
        super().__init__()
        self.frontend, self.encoder, self.pool = frontend, encoder, pool
        self.head = nn.Linear(encoder.dim, n_labels + 1)

    def forward(self, wave: Tensor) -> Tensor:
        x = self.encoder(self.frontend(wave))  # (B, T, D) at 50 Hz
        if self.pool > 1:
            x = F.avg_pool1d(x.transpose(1, 2), self.pool, self.pool, ceil_mode=True).transpose(1, 2)  # (B, T/k, D)
        return self.head(x).log_softmax(-1)  # (B, T', C + 1)

    @torch.no_grad()
    def transcribe(self, wave: Tensor) -> list[list[int]]:
        """Greedy CTC: best label per frame, repeats collapsed, blanks dropped -> label ids (0-based)."""
        return ctc_greedy(self(wave).argmax(-1))


def ctc_greedy(best: Tensor) -> list[list[int]]:
    """(B, T') best label per frame (0 = blank) -> label sequences with 1 subtracted (0-based)."""
    out = []
    for row in best.tolist():
        seq, prev = [], 0
        for t in row:
            if t != prev and t != 0:
                seq.append(t - 1)
            prev = t
        out.append(seq)
    return out


class SpeechRoutes(nn.Module):
    """The routes named in ``routes`` as submodules: ``asr`` + ``text_lm`` (cascade), ``e2e``, ``e2e_prosody``."""

    def __init__(self, modules: dict[str, nn.Module]) -> None:
        super().__init__()
        for name, m in modules.items():
            self.add_module(name, m)
        self.routes = tuple(r for r in ROUTES if (r != "cascade" and r in modules) or
                            (r == "cascade" and "asr" in modules))


class SpeechRoutesConfig(NamedBase):
    encoder: AudioEncoderConfig = Field(default_factory=AudioEncoderConfig)
    adapter: AudioAdapterConfig = Field(default_factory=AudioAdapterConfig)
    decoder: DecoderConfig = Field(default_factory=DecoderConfig)
    routes: list[Literal["cascade", "e2e", "e2e_prosody"]] = Field(default_factory=lambda: list(ROUTES))
    f0_range: tuple[float, float] = Field((65.0, 500.0), description="YIN search range (Hz) of e2e_prosody")
    prosody_cache: int = Field(4096, ge=0, description="clips whose F0/energy channels are kept (0: recompute)")


def _decoder(vocab_size: int, d: DecoderConfig) -> TextDecoder:
    return TextDecoder(vocab_size, d.dim, d.depth, d.heads, d.max_len, d.mlp_ratio, d.dropout)


@register("model", "speech_routes", schema=SpeechRoutesConfig)
def build_speech_routes(cfg: SpeechRoutesConfig, *, vocab_size: int, n_labels: int,
                        seed: int | None = None) -> SpeechRoutes:
    """Independent parameters per route, each built from the same encoder / adapter / decoder sizes."""
    if not cfg.routes:
        raise ValueError("model.routes is empty; name at least one of " + ", ".join(ROUTES))
    e, a, d = cfg.encoder, cfg.adapter, cfg.decoder
    if e.spec_augment != "none":
        raise ValueError("model.encoder.spec_augment must be none for speech_routes (F0 channels are not masked)")
    if seed is not None:
        torch.manual_seed(seed)
    mods: dict[str, nn.Module] = {}
    if "cascade" in cfg.routes:
        mods["asr"] = CTCRecognizer(LogMel(e.n_mels), WhisperStyleEncoder(e.n_mels, e.dim, e.depth, e.heads,
                                                                          e.max_frames), n_labels, a.k)
        mods["text_lm"] = _decoder(vocab_size, d)
    for name in ("e2e", "e2e_prosody"):
        if name not in cfg.routes:
            continue
        front: nn.Module = LogMel(e.n_mels)
        if name == "e2e_prosody":
            front = LogMelProsody(front, *cfg.f0_range, cache_size=cfg.prosody_cache)
        n_in = e.n_mels + (2 if name == "e2e_prosody" else 0)
        mods[name] = AudioLM(front, WhisperStyleEncoder(n_in, e.dim, e.depth, e.heads, e.max_frames),
                             build_adapter(e.dim, d.dim, a.kind, a.k, 50.0, a.projector, a.n_langs),
                             _decoder(vocab_size, d))
    return SpeechRoutes(mods)
