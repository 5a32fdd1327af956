"""Recipes: a strict, typed schema over YAML files and ``key.sub=value`` overrides.

A recipe has fixed sections (``optim``, ``train``, ``run``) and sections whose schema depends on
the component they select through the registry:

- ``data``  selected by ``data.source``  (registry kind ``source``),
- ``model`` selected by ``model.name``   (kind ``model``),
- ``loss``  selected by ``loss.name``    (kind ``loss``),
- ``eval``  selected by the recipe's ``task`` (kind ``task``).

Every section is a pydantic model that forbids unknown keys. Errors name the file, the line when
known, the dotted key and the allowed keys, e.g.::

    recipes/x.yaml:12: unknown key 'train.stepz'; allowed keys in 'train': batch_size, ...

A recipe may start from another with ``base: other.yaml`` (path relative to the recipe); its
mapping is deep-merged under the recipe's own keys. Reading the YAML (``base:``, line numbers) and
applying overrides is in ``recipe_yaml.py``; its names are importable from here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from modalab import registry
from modalab.errors import short
from modalab.recipe_guard import find_nul, reject_bool
from modalab.recipe_yaml import ConfigError, _read_yaml, _Source, apply_overrides, parse_override  # noqa: F401


class Section(BaseModel):
    """Base for every recipe section: unknown keys are errors, assignments are validated, numbers
    are finite and a boolean is never taken for a number (``recipe_guard.py``)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=(),
                              allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _strict_numbers(cls, v: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        return reject_bool(v, field.annotation) if field is not None else v


# --------------------------------------------------------------------------- fixed sections


class ParamGroup(Section):
    """Learning rate / weight decay for parameters whose name matches a glob ``pattern``."""

    pattern: str
    lr: float | None = None
    weight_decay: float | None = None


class OptimConfig(Section):
    name: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.1, ge=0)
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    momentum: float = 0.9  # sgd only
    fused: bool = Field(False, description="adamw: torch's fused kernel (CPU and CUDA), ~3x faster "
                        "steps than foreach but not bit-identical to it; off keeps seeded results")
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_steps: int = Field(0, ge=0)
    min_lr_ratio: float = Field(0.0, ge=0, le=1)
    param_groups: list[ParamGroup] = Field(default_factory=list)


class StageConfig(Section):
    """One training stage: ``steps`` optimizer steps with only ``trainable`` parameters (glob
    patterns over parameter names) updated, and per-pattern learning rates ``lr``."""

    steps: int = Field(gt=0)
    trainable: list[str] = Field(default_factory=lambda: ["*"], min_length=1)
    lr: dict[str, float] = Field(default_factory=dict, description="pattern -> learning rate")
    name: str | None = None


class DDPConfig(Section):
    """``train.strategy: ddp`` settings (``train/ddp.py``); none changes the gradients."""

    find_unused_parameters: bool | Literal["auto"] = Field(
        "auto", description="auto: probe the first steps; if every parameter gets a gradient on "
        "every rank, stop DDP's per-step graph walk and used-parameter all-reduce (logged either way)")
    static_graph: bool = Field(False, description="DDP static_graph, once the parameters are known all used")
    bucket_cap_mb: float | None = Field(25.0, gt=0, description="gradient bucket size (MiB); null = "
                                        "DDP's default (1 MiB first bucket, then 25)")
    gradient_as_bucket_view: bool = False
    batched_grad_copy: bool = Field(False, description="one copy + divide per bucket (torch >= 2.13)")
    loss_in_bucket: bool = Field(True, description="the loss travels in the gradient all-reduce (no "
                                 "separate loss all-mean); used when train.accum_steps is 1")
    gloo_socket_ifname: str | None = Field("lo", description="GLOO_SOCKET_IFNAME for `modalab run "
                                           "--nproc N` (one machine) unless already set; null: leave it")


class TrainConfig(Section):
    steps: int = Field(100, gt=0, description="number of optimizer steps")
    batch_size: int = Field(64, gt=0, description="global batch of one optimizer step (all processes)")
    grad_clip: float | None = Field(1.0, gt=0)
    precision: Literal["fp32", "bf16", "fp16", "auto"] = Field(
        "fp32", description="auto = bf16 where a probe of the model's largest block shows it faster"
    )
    compile: bool | Literal["auto"] = Field(
        False, description="torch.compile the transformer blocks; auto = only where it pays (train/compile.py)"
    )
    log_every: int = Field(10, gt=0)
    eval_every: int = Field(0, ge=0, description="0: evaluate only at the end")
    checkpoint_every: int = Field(0, ge=0, description="0: checkpoint only at the end")
    keep_checkpoints: int = Field(2, gt=0)
    max_bad_steps: int = Field(10, gt=0)
    num_threads: int | None = Field(None, gt=0, description="torch intra-op threads")
    accum_steps: int = Field(1, gt=0, description="micro-batches per optimizer step")
    accum_mode: Literal["auto", "exact", "naive"] = Field(
        "auto", description="exact = GradCache (same result as one big batch); naive = per "
        "micro-batch losses (fewer negatives); auto = exact when the task supports it"
    )
    strategy: Literal["ddp", "fsdp"] = Field("ddp", description="multi-process strategy (torchrun)")
    ddp: DDPConfig = Field(default_factory=DDPConfig)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    grad_checkpointing: bool | list[str] = Field(
        False, description="true, or module name patterns (e.g. [image_encoder]) to checkpoint"
    )
    stages: list[StageConfig] = Field(default_factory=list)
    deterministic: bool = Field(False, description="torch.use_deterministic_algorithms")
    tensorboard: bool = Field(False, description="also log to TensorBoard (same as run.loggers: [tensorboard])")


class RunConfig(Section):
    name: str = "run"
    seed: int = Field(0, ge=0, lt=2**32, description="0 <= seed < 2**32 (numpy, sklearn and torch accept it)")
    out_dir: str = "runs"
    progress: bool = True
    loggers: list[Literal["jsonl", "tensorboard", "mlflow"]] = Field(
        default_factory=lambda: ["jsonl"],
        description="where records go besides metrics.jsonl (always written): tensorboard "
        "(<run>/tensorboard), mlflow ($MLFLOW_TRACKING_URI, else ./mlruns); experiment/loggers.py",
    )

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        if not v or any(c in v for c in "/\\") or v.startswith("."):
            raise ValueError("run.name must be a plain name without '/', '\\' or a leading '.'")
        return v


# ------------------------------------------------------------------ registry-selected sections


class DataBase(Section):
    """Fields every data source accepts."""

    source: str
    on_error: Literal["error", "skip"] = "error"
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes")
    max_image_pixels: int = Field(
        64_000_000, gt=0, description="larger images are bad samples (checked from the header)")
    max_aspect_ratio: float = Field(20.0, ge=1, description="long side / short side above this: a bad sample")
    val_fraction: float = Field(
        0.1, ge=0, lt=1, description="share of the training split held out as validation (0: none); "
        "stratified by label, or by whole speakers/writers/videos where the source has groups")
    split_seed: int | None = Field(
        None, ge=0, description="seed of the train/val/test split (and of any data the source draws); "
        "None: run.seed. Fix it to vary run.seed over post-training seeds while every run (and the "
        "towers pretrained on that split) sees the same training images")


class NamedBase(Section):
    name: str


class LossBase(NamedBase):
    """Fields every contrastive loss accepts."""

    temperature: float | None = Field(
        None, gt=0, description="fixed tau; None = learn the model's logit scale"
    )


class EvalBase(Section):
    batch_size: int = Field(256, gt=0)


DYNAMIC_SECTIONS: dict[str, tuple[str, str]] = {
    # section -> (registry kind, discriminator key)
    "data": ("source", "source"),
    "model": ("model", "name"),
    "loss": ("loss", "name"),
}


class Recipe(Section):
    """A fully validated recipe."""

    task: str = "contrastive"
    data: DataBase
    model: NamedBase
    loss: NamedBase
    eval: EvalBase
    optim: OptimConfig = Field(default_factory=OptimConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    run: RunConfig = Field(default_factory=RunConfig)

    model_config = ConfigDict(extra="forbid", validate_assignment=False, protected_namespaces=())

    @property
    def data_seed(self) -> int:
        """The seed a data source draws its split with: ``data.split_seed``, else ``run.seed``."""
        return self.run.seed if self.data.split_seed is None else self.data.split_seed

    def to_dict(self) -> dict[str, Any]:
        """Plain, YAML-ready dict with every default filled in."""
        out: dict[str, Any] = {"task": self.task}
        for key in ("data", "model", "loss", "eval", "optim", "train", "run"):
            out[key] = getattr(self, key).model_dump(mode="json")
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


TOP_KEYS = ("base", "task", "data", "model", "loss", "eval", "optim", "train", "run")
FIXED_SECTIONS: dict[str, type[Section]] = {
    "optim": OptimConfig,
    "train": TrainConfig,
    "run": RunConfig,
}


# --------------------------------------------------------------------------------- validation


def _allowed(model: type[BaseModel]) -> str:
    return ", ".join(model.model_fields)


def _validate_section(
    model: type[BaseModel], data: Any, prefix: tuple[str, ...], src: _Source
) -> BaseModel:
    section = ".".join(prefix)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{src.where(prefix)}: '{section}' must be a mapping of keys, got {short(data)}"
        )
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_error(e, model, prefix, src)) from None


def _submodel(model: type[BaseModel], loc: tuple[Any, ...]) -> tuple[type[BaseModel], str]:
    """Follow ``loc`` through nested pydantic models; return the innermost model and its path."""
    cur = model
    path: list[str] = []
    for part in loc:
        if isinstance(part, int):
            path[-1] = f"{path[-1]}[{part}]"
            continue
        field = cur.model_fields.get(str(part))
        if field is None:
            break
        path.append(str(part))
        ann = field.annotation
        inner = _first_model(ann)
        if inner is None:
            break
        cur = inner
    return cur, ".".join(path)


def _first_model(ann: Any) -> type[BaseModel] | None:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in getattr(ann, "__args__", ()) or ():
        found = _first_model(arg)
        if found is not None:
            return found
    return None


def _format_error(
    e: ValidationError, model: type[BaseModel], prefix: tuple[str, ...], src: _Source
) -> str:
    msgs = []
    for err in e.errors():
        loc = tuple(str(p) for p in err["loc"])
        full = (*prefix, *loc)
        dotted = ".".join(full)
        where = src.where(full)
        if err["type"] == "extra_forbidden":
            parent, parent_path = _submodel(model, err["loc"][:-1])
            section = ".".join(p for p in (".".join(prefix), parent_path) if p)
            msgs.append(
                f"{where}: unknown key '{dotted}'; allowed keys in '{section}': {_allowed(parent)}"
            )
        elif err["type"] == "missing":
            msgs.append(f"{where}: missing required key '{dotted}'")
        else:
            msgs.append(f"{where}: invalid value {short(err.get('input'))} for '{dotted}': {err['msg']}")
    return "\n".join(msgs)


def validate(raw: dict[str, Any], src: _Source | None = None) -> Recipe:
    """Validate a raw recipe mapping into a :class:`Recipe`."""
    src = src or _Source(None)
    nul = find_nul(raw)
    if nul is not None:
        raise ConfigError(f"{src.where(nul)}: '{'.'.join(nul)}' contains a NUL byte (\\0)")
    unknown = [k for k in raw if k not in TOP_KEYS]
    if unknown:
        k = unknown[0]
        raise ConfigError(
            f"{src.where((k,))}: unknown section '{k}'; allowed sections: {', '.join(TOP_KEYS[1:])}"
        )
    task = raw.get("task", "contrastive")
    if not isinstance(task, str):
        raise ConfigError(f"{src.where(('task',))}: 'task' must be a name, got {short(task)}")
    sections: dict[str, Any] = {"task": task}
    for key, (kind, disc) in DYNAMIC_SECTIONS.items():
        body = raw.get(key)
        if body is None:
            raise ConfigError(f"{src.where(())}: missing section '{key}' (with '{key}.{disc}')")
        if not isinstance(body, dict):
            raise ConfigError(f"{src.where((key,))}: '{key}' must be a mapping, got {short(body)}")
        if disc not in body:
            raise ConfigError(
                f"{src.where((key,))}: '{key}.{disc}' is required; one of: "
                f"{', '.join(registry.names(kind))}"
            )
        entry = _entry(kind, body[disc], (key, disc), src)
        schema = entry.schema or (DataBase if key == "data" else NamedBase)
        sections[key] = _validate_section(schema, body, (key,), src)
    task_entry = _entry("task", task, ("task",), src)
    sections["eval"] = _validate_section(task_entry.schema or EvalBase, raw.get("eval"), ("eval",), src)
    for key, model in FIXED_SECTIONS.items():
        sections[key] = _validate_section(model, raw.get(key), (key,), src)
    return Recipe.model_construct(**sections)


def _entry(kind: str, name: Any, loc: tuple[str, ...], src: _Source) -> registry.Entry:
    try:
        return registry.get(kind, str(name))
    except registry.RegistryError:
        raise ConfigError(
            f"{src.where(loc)}: unknown {kind} {short(name)} for '{'.'.join(loc)}'; "
            f"registered: {', '.join(registry.names(kind))}"
        ) from None


def load(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Load a YAML recipe, apply ``key.sub=value`` overrides and validate everything.

    ``path`` that is not a file is looked up among the packaged recipes (``recipe_catalog``)."""
    from modalab.recipe_catalog import RecipeNotFound, resolve

    try:
        path = resolve(path)
    except RecipeNotFound as e:
        raise ConfigError(f"recipe not found: {e}") from None
    src = _Source(path)
    raw = _read_yaml(path, src)
    raw = apply_overrides(raw, list(overrides or []), src)
    return validate(raw, src)


def read_mapping(path: str | Path) -> dict[str, Any]:
    """The raw mapping of a recipe file with its ``base:`` recipes merged in (not validated)."""
    return _read_yaml(Path(path), _Source(Path(path)))


def from_dict(raw: dict[str, Any], overrides: list[str] | None = None) -> Recipe:
    src = _Source(None)
    return validate(apply_overrides(raw, list(overrides or []), src), src)
