"""Score routes trained in separate runs together, so e2e items can be split by the cascade's ASR.

    python scripts/speech_routes_joint_eval.py --cascade RUN --e2e RUN --e2e-prosody RUN \
        [--split test|val] [--out FILE.json]

The routes of ``speech_routes`` share no parameters and, with ``train.grad_clip: null``, train
exactly as they would together; running each in its own process (``model.routes=[e2e]``) is the
same experiment, split for a loaded machine. This script rebuilds the recipe of the ``--cascade``
run with all three routes, loads each route's weights from its run's newest valid checkpoint
(safetensors), checks that every parameter was loaded exactly once, and evaluates ``--split`` with
``task.evaluate`` -- so ``e2e/word_acc|asr_ok`` and ``|asr_err`` exist for every route.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from safetensors.torch import load_file

from modalab.config import load
from modalab.tasks.speech_routes import SpeechRoutesTask
from modalab.train.checkpoint import latest_valid


def weights(run: Path) -> dict:
    ckpt = latest_valid(run / "checkpoints")
    if ckpt is None:
        sys.exit(f"speech_routes_joint_eval: {run}/checkpoints holds no valid checkpoint")
    return load_file(str(ckpt / "model.safetensors"))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cascade", type=Path, required=True)
    ap.add_argument("--e2e", type=Path, required=True)
    ap.add_argument("--e2e-prosody", type=Path, required=True)
    ap.add_argument("--split", choices=("test", "val"), default="test")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args(argv)
    recipe = load(a.cascade / "config.yaml", ["model.routes=[cascade,e2e,e2e_prosody]"])
    task = SpeechRoutesTask(recipe, None)  # type: ignore[arg-type]  # evaluate(final=False) writes nothing
    state: dict = {}
    for run, prefixes in ((a.cascade, ("asr.", "text_lm.")), (a.e2e, ("e2e.",)), (a.e2e_prosody, ("e2e_prosody.",))):
        got = {k: v for k, v in weights(run).items() if k.startswith(prefixes)}
        if not got:
            sys.exit(f"speech_routes_joint_eval: {run} has no weights named {prefixes}")
        state.update(got)
    missing, unexpected = task.model.load_state_dict(state, strict=False)
    if missing or unexpected:
        sys.exit(f"speech_routes_joint_eval: missing {missing[:5]}, unexpected {unexpected[:5]}")
    res = task.evaluate(final=False, split=a.split)
    res = {k: v for k, v in res.items() if not k.startswith("loss/")}
    text = json.dumps(res, indent=1, default=float)
    if a.out:
        a.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
