"""The Python API behind ``import modalab``: run a recipe, load a finished run back, build a
model by name.

    import modalab
    res = modalab.run("clip_digits", train__steps=20)            # a packaged recipe or a path
    model, tokenizer, config = modalab.load_run(res.path)
    text = model.encode_text(tokenizer(["a handwritten 3"]))     # (1, D), L2-normalised

Overrides are keyword arguments with ``__`` for the dots of ``modalab run``'s ``key.sub=value``
(``train__steps=20`` is ``train.steps=20``); values are written as YAML, so lists and dicts work.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modalab import registry
from modalab.config import ConfigError, Recipe, load


@dataclass
class RunResult:
    """A finished run: its directory, ``results.json`` and the resolved recipe."""

    path: Path
    results: dict[str, Any]
    config: Recipe

    def __getitem__(self, key: str) -> Any:
        return self.results[key]

    @property
    def metrics(self) -> list[dict[str, Any]]:
        """The records of metrics.jsonl (training, validation, events)."""
        from modalab.experiment.rundir import RunDir

        return RunDir(self.path).read_metrics()


def override_texts(overrides: dict[str, Any]) -> list[str]:
    """``{"train__steps": 20, "eval.prompts": ["{label}"]}`` ->
    ``["train.steps=20", "eval.prompts=[\\"{label}\\"]"]``."""
    out = []
    for key, value in overrides.items():
        text = value if isinstance(value, str) else json.dumps(value)  # JSON is YAML
        out.append(f"{key.replace('__', '.')}={text}")
    return out


def run(recipe: str | Path, out: str | Path | None = None, **overrides: Any) -> RunResult:
    """Train and evaluate ``recipe`` (a file or a packaged recipe's name) with ``overrides``;
    ``out`` is the run directory (default ``run.out_dir/<name>-<timestamp>``)."""
    from modalab.experiment.runner import run as run_recipe

    texts = override_texts(overrides)
    cfg = load(recipe, texts)
    path = run_recipe(cfg, Path(out) if out is not None else None, str(recipe), texts)
    path = Path(path).resolve()
    return RunResult(path, json.loads((path / "results.json").read_text()), cfg)


def _dual_encoder_kwargs(entry: registry.Entry) -> bool:
    params = inspect.signature(entry.builder).parameters
    return {"image_size", "in_channels", "vocab_size"} <= set(params)


def load_run(path: str | Path) -> tuple[Any, Any, Recipe]:
    """(model in eval mode with the latest valid checkpoint's weights, tokenizer, resolved recipe)
    of a run directory. The model is rebuilt from config.yaml by its registered builder; dual
    encoders (e.g. ``two_tower``) offer ``encode_image(images)`` and ``encode_text(tokens)``."""
    from modalab.text.tokenizer import tokenizer_from_dict
    from modalab.train.checkpoint import latest_valid, load_weights

    path = Path(path)
    if not (path / "config.yaml").is_file():
        raise FileNotFoundError(f"{path} is not a run directory (no config.yaml)")
    cfg = load(path / "config.yaml")
    ckpt = latest_valid(path / "checkpoints")
    if ckpt is None:
        raise FileNotFoundError(f"{path}: no valid checkpoint under checkpoints/ (did the run finish?)")
    entry = registry.get("model", cfg.model.name)
    state = json.loads((ckpt / "trainer_state.json").read_text())
    if not _dual_encoder_kwargs(entry) or "tokenizer" not in state:
        raise ConfigError(
            f"{path}: load_run rebuilds models whose builder takes image_size, in_channels and "
            f"vocab_size and whose task saves its tokenizer (task 'contrastive' and kin); model "
            f"'{cfg.model.name}' of task '{cfg.task}' is not one of them"
        )
    tokenizer = tokenizer_from_dict(state["tokenizer"])
    model = entry.builder(
        cfg.model, image_size=cfg.data.image_size, in_channels=cfg.data.channels,  # type: ignore[attr-defined]
        vocab_size=tokenizer.vocab_size)
    load_weights(ckpt, model)
    return model.eval(), tokenizer, cfg


def create_model(name_or_recipe: str | Path, **kw: Any) -> Any:
    """A model, untrained: by registered name (``kw`` = fields of its schema, e.g. ``embed_dim``,
    plus its builder's arguments, e.g. ``image_size``, ``in_channels``, ``vocab_size``), or from a
    recipe's ``model:`` section (then ``image_size`` / ``in_channels`` default to the recipe's data;
    ``vocab_size`` is needed unless the recipe uses the byte tokenizer)."""
    if str(name_or_recipe) in registry.names("model"):
        entry = registry.get("model", str(name_or_recipe))
        fields = set(entry.schema.model_fields) if entry.schema else set()
        section = {k: v for k, v in kw.items() if k in fields}
        build_kw = {k: v for k, v in kw.items() if k not in fields}
        try:
            cfg = entry.schema(name=entry.name, **section) if entry.schema else section
        except Exception as e:  # pydantic's ValidationError, restated with the model name
            raise ConfigError(f"create_model('{entry.name}'): {e}") from None
        return entry.builder(cfg, **build_kw)
    try:
        recipe = load(name_or_recipe)
    except ConfigError as e:
        raise ConfigError(f"create_model: '{name_or_recipe}' is neither a registered model "
                          f"({', '.join(registry.names('model'))}) nor a recipe ({e})") from None
    entry = registry.get("model", recipe.model.name)
    if _dual_encoder_kwargs(entry):
        kw.setdefault("image_size", getattr(recipe.data, "image_size", None))
        kw.setdefault("in_channels", getattr(recipe.data, "channels", None))
        text = getattr(recipe.model, "text", None)
        if "vocab_size" not in kw and getattr(text, "tokenizer", None) == "byte":
            from modalab.text.tokenizer import ByteTokenizer

            kw["vocab_size"] = ByteTokenizer(text.context_length).vocab_size  # type: ignore[union-attr]
        if "vocab_size" not in kw:
            raise ConfigError(f"create_model('{name_or_recipe}'): give vocab_size= (the word tokenizer's "
                              f"vocabulary is built from the data; a trained run's comes with load_run)")
    return entry.builder(recipe.model, **kw)
