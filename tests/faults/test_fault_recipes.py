"""Hostile recipes and overrides: refused at config time with one bounded message."""

import time

import pytest
from fault_helpers import RECIPE

from modalab.config import ConfigError, load
from modalab.recipe_guard import MAX_NODES, MAX_RECIPE_BYTES


def _bomb(levels: int = 9) -> str:
    """~500 bytes of nested aliases describing 10**levels items."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        ref = ", ".join([f"*a{i - 1}"] * 10)
        lines.append(f"a{i}: &a{i} [{ref}]")
    return "\n".join(lines) + "\n"


def test_alias_bomb_refused_quickly_with_a_short_message(tmp_path):
    """Before: a 501-byte recipe built an 800 MB error message and a MemoryError."""
    bomb = _bomb()
    r = tmp_path / "bomb.yaml"
    r.write_text(f"base: {RECIPE}\n" + bomb + "train: {steps: *a8}\n")
    assert r.stat().st_size < 1000
    t = time.perf_counter()
    with pytest.raises(ConfigError, match=r"bomb.yaml: YAML aliases expand to [\d,]+ nodes \(limit") as e:
        load(r)
    assert time.perf_counter() - t < 5 and len(str(e.value)) < 500
    with pytest.raises(ConfigError, match="override .*aliases expand"):  # through an override too
        load(RECIPE, [_override_bomb()])


def _override_bomb() -> str:
    """The same bomb in one flow sequence: ``[&a0 [x, ...], &a1 [*a0, ...], ...]``."""
    items = ["&a0 [" + ", ".join(["x"] * 10) + "]"]
    items += [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 8)]
    return "train.steps=[" + ", ".join(items) + "]"


def test_recursive_alias_refused(tmp_path):
    r = tmp_path / "loop.yaml"
    r.write_text(f"base: {RECIPE}\ntrain: &t {{steps: 5, stages: [*t]}}\n")
    with pytest.raises(ConfigError, match="refers to itself"):
        load(r)


def test_huge_recipe_refused(tmp_path):
    r = tmp_path / "huge.yaml"
    r.write_text("# " + "x" * (MAX_RECIPE_BYTES + 10) + "\n")
    with pytest.raises(ConfigError, match=r"huge.yaml: [\d,]+ bytes; a recipe is at most"):
        load(r)


def test_large_value_is_truncated_in_the_message():
    with pytest.raises(ConfigError) as e:
        load(RECIPE, ["train.steps=[" + ", ".join(["12345678"] * 5000) + "]"])
    msg = str(e.value)
    assert "train.steps" in msg and "..." in msg and len(msg) < 600


@pytest.mark.parametrize("override,expected", [
    ("run.seed=-1", "greater than or equal to 0"),
    ("run.seed=1e20", "valid integer"),
    (f"run.seed={2**32}", "less than 4294967296"),
    ("optim.lr=.inf", "finite number"),
    ("optim.lr=.nan", "finite number"),
    ("loss.temperature=.inf", "finite number"),
    ("train.steps=true", "got a boolean"),
    ("train.batch_size=false", "got a boolean"),
    ("optim.betas=[0.9, true]", "got a boolean"),
    ("data.path=a\0b", "NUL byte"),
])
def test_bad_values_refused_at_config_time(override, expected):
    """Before: seed -1 / 1e20 crashed in sklearn or torch.manual_seed, lr=inf failed 10 steps
    later, train.steps=true silently became 1."""
    with pytest.raises(ConfigError, match=expected) as e:
        load(RECIPE, [override])
    assert override.split("=")[0] in str(e.value)


def test_good_values_still_accepted():
    r = load(RECIPE, ["run.seed=4294967295", "train.grad_checkpointing=true", "optim.lr=1e-3",
                      "train.steps=3", "data.augment=false"])
    assert r.run.seed == 2**32 - 1 and r.train.steps == 3 and r.train.grad_checkpointing is True
    assert MAX_NODES >= 10_000
