"""Renaming state dicts between a library's layout and modalab's, in both directions.

A :class:`KeyMap` lists plain renames (modalab key -> library key) and fused attention inputs
(modalab's one ``qkv`` projection <- the library's separate q, k, v; a missing k bias, as in
Whisper, becomes zeros: adding a constant to every key's bias shifts all scores of a query equally
and leaves the softmax unchanged) and the reverse, split attention inputs (modalab's separate q, k,
v projections <- the library's one fused ``in_proj``, as ``nn.MultiheadAttention`` stores it). Every
library key must be used or listed as ignorable, and every modalab key must be filled: nothing is
dropped silently.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

import torch
from torch import Tensor

from modalab.models.pretrained.source import PretrainedError


@dataclass
class KeyMap:
    renames: dict[str, str] = field(default_factory=dict)  # modalab key -> library key
    fused: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # modalab qkv -> (q, k, v)
    split: dict[tuple[str, str, str], str] = field(default_factory=dict)  # modalab (q, k, v) -> fused
    ignore: tuple[str, ...] = ("*position_ids",)  # library keys that carry no weights
    transposed: set[str] = field(default_factory=set)  # modalab keys stored transposed there

    def rename(self, ours: str, theirs: str) -> None:
        self.renames[ours] = theirs

    def linear(self, ours: str, theirs: str, bias: bool = True) -> None:
        self.renames[f"{ours}.weight"] = f"{theirs}.weight"
        if bias:
            self.renames[f"{ours}.bias"] = f"{theirs}.bias"

    def norm(self, ours: str, theirs: str) -> None:
        self.linear(ours, theirs)

    def qkv(self, ours: str, q: str, k: str, v: str) -> None:
        self.fused[f"{ours}.weight"] = (f"{q}.weight", f"{k}.weight", f"{v}.weight")
        self.fused[f"{ours}.bias"] = (f"{q}.bias", f"{k}.bias", f"{v}.bias")

    def in_proj(self, ours: str, theirs: str) -> None:
        """modalab ``{ours}.{q,k,v}_proj`` <- the library's fused ``{theirs}.in_proj_*`` (3E, ...)."""
        for kind in ("weight", "bias"):
            parts = tuple(f"{ours}.{p}_proj.{kind}" for p in "qkv")
            self.split[parts] = f"{theirs}.in_proj_{kind}"  # type: ignore[index]

    # ------------------------------------------------------------------ library -> modalab
    def to_ours(self, theirs: dict[str, Tensor], shapes: dict[str, torch.Size], where: str) -> dict[str, Tensor]:
        """Library state dict -> modalab state dict shaped like ``shapes`` (the target's state dict)."""
        used: set[str] = set()
        out: dict[str, Tensor] = {}

        def take(key: str) -> Tensor:
            if key not in theirs:
                raise PretrainedError(f"{where}: missing weight {key!r}")
            used.add(key)
            return theirs[key]

        for ours, key in self.renames.items():
            out[ours] = take(key).T if ours in self.transposed else take(key)
        for ours, (q, k, v) in self.fused.items():
            tq = take(q)
            tk = take(k) if (k in theirs or not ours.endswith(".bias")) else torch.zeros_like(tq)
            out[ours] = torch.cat([tq, tk, take(v)], dim=0)
        for parts, key in self.split.items():
            for mine, chunk in zip(parts, take(key).chunk(len(parts), dim=0)):
                out[mine] = chunk
        extra = [k for k in theirs if k not in used and not any(fnmatch.fnmatch(k, p) for p in self.ignore)]
        if extra:
            raise PretrainedError(f"{where}: {len(extra)} weights this converter does not know: {sorted(extra)[:8]}")
        missing = sorted(set(shapes) - set(out))
        if missing:
            raise PretrainedError(f"{where}: nothing fills modalab weights {missing[:8]}")
        for k, shape in shapes.items():
            if out[k].numel() != torch.Size(shape).numel():
                raise PretrainedError(f"{where}: {k} has {tuple(out[k].shape)}, expected {tuple(shape)}")
            out[k] = out[k].reshape(shape).contiguous()  # no copy unless transposed
        return out

    # ------------------------------------------------------------------ modalab -> library
    def to_theirs(self, ours: dict[str, Tensor], shapes: dict[str, tuple[int, ...]] | None = None) -> dict[str, Tensor]:
        """modalab state dict -> library state dict (``shapes`` overrides library shapes, e.g. (1,))."""
        shapes = shapes or {}
        out: dict[str, Tensor] = {}
        for mine, key in self.renames.items():
            t = ours[mine].detach()
            out[key] = (t.T if mine in self.transposed else t).clone().contiguous()
        for mine, (q, k, v) in self.fused.items():
            tq, tk, tv = ours[mine].detach().chunk(3, dim=0)
            out[q], out[k], out[v] = tq.clone(), tk.clone(), tv.clone()
        for parts, key in self.split.items():
            out[key] = torch.cat([ours[p].detach() for p in parts], dim=0)
        for key, shape in shapes.items():
            out[key] = out[key].reshape(shape)
        return out
