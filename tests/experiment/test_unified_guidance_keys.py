"""The unified task's sampler keys (eval.guidance_interval, eval.guidance_rescale) reach DDIM and
reject bad values at load time."""

import pytest
import torch

from modalab import registry
from modalab.config import ConfigError, load
from modalab.experiment.rundir import RunDir

from tests.experiment.test_unified_task import RECIPE, TINY


def test_bad_guidance_interval_is_a_clear_error():
    with pytest.raises(ConfigError, match="guidance_interval"):
        load(RECIPE, [*TINY, "eval.guidance_interval=[500, 100]"])
    with pytest.raises(ConfigError, match="guidance_rescale"):
        load(RECIPE, [*TINY, "eval.guidance_rescale=1.5"])


def test_guidance_interval_reaches_the_sampler(tmp_path):
    recipe = load(RECIPE, [*TINY, "eval.guidance=4", "eval.ddim_steps=3"])
    task = registry.build("task", "unified", recipe, RunDir.create(tmp_path / "r", str(tmp_path), "u"))
    task.model.eval()  # no dropout in the condition
    task.eval_cfg.guidance_interval = None  # the recipe's [0, 500] off: guidance at every step
    prompts = ["a handwritten seven", "a handwritten two"]
    plain = task.generate(prompts, "diffusion", seed=0)
    task.eval_cfg.guidance_interval = (0, 999)  # every visited timestep (999, 500, 0): as plain
    torch.testing.assert_close(task.generate(prompts, "diffusion", seed=0), plain)
    task.eval_cfg.guidance_interval = (0, 0)  # the last step only
    assert not torch.allclose(task.generate(prompts, "diffusion", seed=0), plain)
    task.eval_cfg.guidance_interval, task.eval_cfg.guidance_rescale = None, 1.0
    assert not torch.allclose(task.generate(prompts, "diffusion", seed=0), plain)
