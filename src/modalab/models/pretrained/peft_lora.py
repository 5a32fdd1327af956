"""LoRA on Hugging Face modules through ``peft`` (adapters saved in peft's own format).

modalab's own LoRA (``fusion/lora.py``) stays for modalab's modules; a wrapped causal LM
(:class:`~modalab.models.pretrained.causal_lm.HFCausalLM`) gets peft's, so its adapters load in
any peft-based tool (``PeftModel.from_pretrained(base, DIR)``) and the base weights stay untouched.

- :func:`apply_lora`: freeze the base model, add LoRA to ``targets`` (module names, e.g.
  ``["q_proj", "v_proj"]`` for Llama/Qwen2, ``["c_attn"]`` for GPT-2); B starts at zero, so the
  model's outputs are unchanged until training moves it.
- :func:`save_adapter` / :func:`load_adapter`: ``adapter_config.json`` + ``adapter_model.safetensors``.
"""

from __future__ import annotations

from pathlib import Path

from modalab.models.pretrained.causal_lm import HFCausalLM
from modalab.models.pretrained.source import PretrainedError


def _peft():  # type: ignore[no-untyped-def]
    try:
        import peft
    except ImportError:
        raise PretrainedError("LoRA on Hugging Face modules needs peft: pip install 'modalab[hf]'") from None
    return peft


def apply_lora(lm: HFCausalLM, targets: list[str], rank: int = 8, alpha: float = 16.0,
               dropout: float = 0.0) -> HFCausalLM:
    """Wrap ``lm.model`` in a peft LoRA model in place; only the adapters are trainable."""
    peft = _peft()
    names = {n.rsplit(".", 1)[-1] for n, _ in lm.model.named_modules()}
    missing = [t for t in targets if t not in names]
    if missing:
        raise PretrainedError(f"LoRA targets {missing} are not module names of this {type(lm.model).__name__}; "
                              f"e.g. {sorted(n for n in names if 'proj' in n or 'attn' in n)[:8]}")
    cfg = peft.LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(targets),
                          task_type="CAUSAL_LM")
    lm.model = peft.get_peft_model(lm.model, cfg)
    return lm


def save_adapter(lm: HFCausalLM, out: Path) -> Path:
    """Write the adapters only (peft's format) to ``out``."""
    if not hasattr(lm.model, "peft_config"):
        raise PretrainedError("this model has no peft adapters; call apply_lora first")
    lm.model.save_pretrained(str(out))
    return Path(out)


def load_adapter(lm: HFCausalLM, folder: Path, trainable: bool = False) -> HFCausalLM:
    """Put the adapters saved in ``folder`` on a freshly loaded base model."""
    peft = _peft()
    if not (Path(folder) / "adapter_config.json").is_file():
        raise PretrainedError(f"{folder}: missing adapter_config.json (a peft adapter folder)")
    lm.model = peft.PeftModel.from_pretrained(lm.model, str(folder), is_trainable=trainable)
    return lm
