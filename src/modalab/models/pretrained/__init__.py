"""Pretrained checkpoints in: Hugging Face folders (``hf:DIR``) and open_clip files (``open_clip:FILE``).

One file per family: ``hf_clip.py`` (CLIP / SigLIP dual encoders), ``open_clip.py`` (open_clip
state dicts), ``hf_towers.py`` (single image / text / Whisper towers), ``causal_lm.py`` (GPT-2,
Llama, Qwen2 ... wrapped), ``tokenizer.py`` and ``preprocess.py`` (the checkpoint's own text and
image preprocessing), ``load.py`` (spec -> model / tokenizer / preprocessor), ``export.py``.
"""
