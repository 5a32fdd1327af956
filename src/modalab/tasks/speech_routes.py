"""Cascade vs end to end with prosody (chapter 5.3.1) as the runner sees it.

Data: ``spoken_prosody`` (digit sequences; the answer "three one four question second" needs the
words for its first ``n_words`` slots and the prosody for the last two). Model: ``speech_routes``
(cascade = CTC ASR -> transcript -> text LM; e2e = encoder -> adapter -> LM; e2e_prosody = e2e with
F0 / energy channels). ``step`` sums the routes' losses (independent parameters; each logged).

Sequences fed to the decoders (``<bos>``, ``<eos>`` from the word tokenizer):

    cascade text LM   <bos> w1 .. wk answer | a1 .. a5 <eos>     loss on the answer part only
    e2e routes        [audio tokens] <bos> | a1 .. a5 <eos>

``evaluate`` generates each route's answer greedily and scores, per route:
``word_acc`` (every digit right), ``digit_acc`` (per slot), ``mode_acc`` (statement / question),
``stress_acc`` (stressed position), ``prosody_acc`` (both), ``all_acc``; and the error propagation:
``word_acc|asr_ok`` / ``word_acc|asr_err`` (the same items split by whether the cascade's ASR
transcript was exactly right) with ``asr/seq_acc``, ``asr/wer``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn
from torch.utils.data import DataLoader

from modalab import registry
from modalab.config import EvalBase, Recipe
from modalab.data.dataset import epoch_loader
from modalab.data.sample import Sample
from modalab.data.sources.spoken_digits import WORDS
from modalab.data.sources.spoken_prosody import MODES, POSITIONS, parse_answer
from modalab.eval.speech_routes import edit_distance, route_scores
from modalab.experiment.rundir import RunDir
from modalab.models.speech_routes import SpeechRoutes
from modalab.registry import register
from modalab.text.generate import greedy
from modalab.text.tokenizer import BOS, EOS, PAD, WordTokenizer
from modalab.tasks.base import split_counts

SEP = "answer"


class SpeechRoutesEval(EvalBase):
    batch_size: int = Field(64, gt=0)
    num_examples: int = Field(8, ge=0, description="answers per route kept in results.json")


class SpeechRoutesTask:
    """Train the routes of ``speech_routes`` together; score words and prosody separately."""

    def __init__(self, recipe: Recipe, run: RunDir) -> None:
        self.recipe, self.run = recipe, run
        self.eval_cfg: SpeechRoutesEval = recipe.eval  # type: ignore[assignment]
        self.data = registry.build("source", recipe.data.source, recipe.data, seed=recipe.data_seed)
        first = self.data.train[0]
        if not {"digits", "mode", "stress"} <= set(first.meta):
            raise ValueError(f"task speech_routes needs a source with digits/mode/stress labels (spoken_prosody); "
                             f"data.source={recipe.data.source} gives meta keys {sorted(first.meta)}")
        self.n_words = len(first.meta["digits"])
        self.tokenizer = WordTokenizer([*WORDS, *MODES, *POSITIONS, SEP], context_length=2 * self.n_words + 6)
        self.max_transcript = 2 * self.n_words  # longer ASR outputs are cut (counted in asr/too_long)
        self.model: SpeechRoutes = registry.build("model", recipe.model.name, recipe.model,
                                                  vocab_size=self.tokenizer.vocab_size, n_labels=len(WORDS),
                                                  seed=recipe.run.seed)
        if recipe.loss.name != "next_token":
            raise ValueError(f"task speech_routes trains with next_token (and CTC); got loss.name={recipe.loss.name}")

    # data ---------------------------------------------------------------------------------
    def collate(self, samples: list[Sample]) -> dict[str, Any]:
        return {"wave": torch.stack([s.media for s in samples]), "answers": [s.text for s in samples],
                "digits": torch.tensor([s.meta["digits"] for s in samples]),
                "meta": [s.meta for s in samples]}

    def train_loader(self) -> DataLoader:
        return epoch_loader(self.data.train, self.recipe.train.batch_size, self.collate, self.recipe.data.num_workers)

    def _text_inputs(self, transcripts: list[list[int]], answers: list[str] | None) -> tuple[Tensor, Tensor]:
        """Cascade LM sequences (B, L) and the mask of the positions whose next token is scored."""
        rows, scored = [], []
        for i, tr in enumerate(transcripts):
            head = [BOS, *(self.tokenizer.index[WORDS[w]] for w in tr[: self.max_transcript]),
                    self.tokenizer.index[SEP]]
            tail = [*self.tokenizer.encode(answers[i]), EOS] if answers is not None else []
            rows.append(head + tail)
            scored.append([False] * (len(head) - 1) + [True] * len(tail))
        n = max(map(len, rows))
        tokens = torch.full((len(rows), n), PAD, dtype=torch.long)
        mask = torch.zeros(len(rows), n - 1, dtype=torch.bool)
        for i, (r, s) in enumerate(zip(rows, scored)):
            tokens[i, : len(r)] = torch.tensor(r)
            mask[i, : len(s)] = torch.tensor(s, dtype=torch.bool)
        return tokens, mask

    # training -----------------------------------------------------------------------------
    def route_losses(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        wave = batch["wave"].to(next(self.model.parameters()).device)
        out: dict[str, Tensor] = {}
        m = self.model
        if "cascade" in m.routes:
            logp = m.asr(wave)  # (B, T', C + 1)
            b, t, _ = logp.shape
            targets = batch["digits"].to(wave.device) + 1  # (B, n_words), 0 is the blank
            out["asr_ctc"] = F.ctc_loss(logp.transpose(0, 1), targets, torch.full((b,), t, dtype=torch.long),
                                        torch.full((b,), self.n_words, dtype=torch.long), zero_infinity=True)
            tokens, mask = self._text_inputs(batch["digits"].tolist(), batch["answers"])
            tokens, mask = tokens.to(wave.device), mask.to(wave.device)
            logits = m.text_lm(tokens[:, :-1], attention_mask=tokens[:, :-1] != PAD)  # (B, L-1, V)
            out["cascade_lm"] = F.cross_entropy(logits[mask], tokens[:, 1:][mask])
        answer_tokens = self.tokenizer(batch["answers"]).to(wave.device)  # (B, L): <bos> a1..a5 <eos> <pad>..
        inp, tgt = answer_tokens[:, :-1], answer_tokens[:, 1:]
        for name in ("e2e", "e2e_prosody"):
            if name in m.routes:
                logits = getattr(m, name)(wave, inp, inp != PAD)  # (B, L-1, V)
                out[name] = F.cross_entropy(logits.flatten(0, 1), tgt.flatten(), ignore_index=PAD)
        return out

    def step(self, batch: dict[str, Any]) -> tuple[Tensor, dict[str, float]]:
        losses = self.route_losses(batch)
        return sum(losses.values()), {f"loss/{k}": float(v.detach()) for k, v in losses.items()}

    def after_step(self, step: int) -> dict[str, float]:
        return {}

    # evaluation ---------------------------------------------------------------------------
    def _decode(self, rows: Tensor) -> list[str]:
        return [self.tokenizer.decode([t for t in r if t not in (EOS, PAD)]) for r in rows.tolist()]

    @torch.no_grad()
    def answers(self, wave: Tensor) -> dict[str, Any]:
        """Each route's answer strings for a batch of waveforms (plus the cascade's transcripts)."""
        m, out = self.model, {}
        n_new = self.n_words + 3
        if "cascade" in m.routes:
            transcripts = m.asr.transcribe(wave)
            out["transcripts"] = transcripts
            prompt, _ = self._text_inputs(transcripts, None)
            lengths = [min(len(t), self.max_transcript) + 2 for t in transcripts]
            texts: list[str] = [""] * len(transcripts)
            for n in sorted(set(lengths)):  # equal-length prompts decode together
                idx = [i for i, k in enumerate(lengths) if k == n]
                gen = greedy(m.text_lm, prompt[idx, :n].to(wave.device), n_new, eos_id=EOS, pad_id=PAD)
                for i, t in zip(idx, self._decode(gen)):
                    texts[i] = t
            out["cascade"] = texts
        for name in ("e2e", "e2e_prosody"):
            if name in m.routes:
                bos = torch.full((wave.shape[0], 1), BOS, dtype=torch.long, device=wave.device)
                out[name] = self._decode(getattr(m, name).generate(wave, bos, n_new, eos_id=EOS, pad_id=PAD))
        return out

    @torch.no_grad()
    def evaluate(self, final: bool = True, split: str = "test") -> dict[str, Any]:
        dataset = self.data.val if split == "val" else self.data.test
        if dataset is None:
            raise ValueError(f"data source '{self.recipe.data.source}' has no {split} split "
                             f"(data.val_fraction: {self.recipe.data.val_fraction})")
        final = final and split == "test"
        self.model.eval()
        device = next(self.model.parameters()).device
        loader = DataLoader(dataset, batch_size=self.eval_cfg.batch_size, collate_fn=self.collate)
        refs: list[dict] = []
        hyps: dict[str, list[str]] = {r: [] for r in self.model.routes}
        transcripts: list[list[int]] = []
        loss_sum: dict[str, float] = {}
        for b in loader:
            for k, v in self.route_losses(b).items():
                loss_sum[k] = loss_sum.get(k, 0.0) + float(v) * len(b["answers"])
            got = self.answers(b["wave"].to(device))
            transcripts += got.get("transcripts", [])
            for r in self.model.routes:
                hyps[r] += got[r]
            refs += [{"digits": m["digits"], "mode": m["mode"], "stress": m["stress"]} for m in b["meta"]]
        self.model.train()
        res: dict[str, Any] = {f"loss/{k}": v / len(refs) for k, v in loss_sum.items()}
        asr_ok = None
        if transcripts:
            asr_ok = [t == r["digits"] for t, r in zip(transcripts, refs)]
            res["asr/seq_acc"] = sum(asr_ok) / len(asr_ok)
            res["asr/wer"] = sum(edit_distance(t, r["digits"]) for t, r in zip(transcripts, refs)) / \
                sum(len(r["digits"]) for r in refs)
        for r in self.model.routes:
            parsed = [parse_answer(h, self.n_words) for h in hyps[r]]
            res.update({f"{r}/{k}": v for k, v in route_scores(parsed, refs, asr_ok).items()})
        if final:
            ex = {r: [{"reference": self.tokenizer.decode(self.tokenizer.encode(a.text)), "answer": h}
                      for a, h in zip((dataset[i] for i in range(len(hyps[r]))), hyps[r])][: self.eval_cfg.num_examples]
                  for r in self.model.routes}
            res["answer_examples"] = ex
            self.run.write_artifact("answers", ex)
        return res

    def counts(self) -> dict[str, Any]:
        return {**split_counts(self.data),
                "num_params": {n: sum(p.numel() for p in mod.parameters()) for n, mod in self.model.named_children()},
                "speakers": {k: sorted(set(v)) for k, v in self.data.speakers.items()}}

    def state(self) -> dict[str, Any]:
        return {"tokenizer": self.tokenizer.to_dict()}

    def extra_modules(self) -> dict[str, nn.Module]:
        return {}


@register("task", "speech_routes", schema=SpeechRoutesEval)
def build_speech_routes_task(recipe: Recipe, run: RunDir) -> SpeechRoutesTask:
    """Cascade (ASR -> text -> LM) vs end to end (encoder -> adapter -> LM), with and without prosody."""
    return SpeechRoutesTask(recipe, run)
