"""Text facts about class names, for pretraining a caption LM that tells its class words apart.

A causal LM trained on the captions alone ("a handwritten seven", "the digit 7 written by hand")
never needs to know which digit a caption names: every class word follows the same context and
predicts the same continuation, so the ten names (and the ten numerals) are exchangeable and their
tied embeddings collapse onto one shared vector (recipes/pretrain/caption_lm.yaml, seed 0: shared
part norm 0.53, per-name spread 0.15, below the init's 0.23). A frozen LM of that kind cannot put
mass on one named digit whatever its context holds, so a visual prefix (LLaVA stage 1) or LoRA
cannot make it caption (issue #23). A real pretrained LM knows that "seven" is not "two"; these
sentences give the toy LM that knowledge from text only (no image, no split leakage): each name
with its numeral both ways, and each name's successor, e.g. ``"seven is 7"``, ``"7 is seven"``,
``"after six comes seven"``.
"""

from __future__ import annotations


def class_facts(classnames: list[str]) -> list[str]:
    """Sentences tying each class name to its index (as a numeral) and to the next class name."""
    if not classnames:
        raise ValueError("class_facts: the data source has no class names")
    out = []
    for i, name in enumerate(classnames):
        out += [f"{name} is {i}", f"{i} is {name}"]
        if i + 1 < len(classnames):
            out.append(f"after {name} comes {classnames[i + 1]}")
    return out
