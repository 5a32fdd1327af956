"""The generation judge: an SVM on real digits that must be accurate before it judges anything."""

import pytest
import torch

from modalab.data.sources.digits import load_digit_images
from modalab.data.dataset import stratified_split
from modalab.eval.judge import ClassJudge


@pytest.fixture(scope="module")
def fitted():
    images, labels = load_digit_images(16)  # (1797, 1, 16, 16) in [0, 1]
    tr, te = stratified_split(labels.tolist(), len(labels), 0.25, 0)
    judge = ClassJudge()
    acc = judge.fit(images[tr], labels[tr], images[te], labels[te])
    return judge, acc, images[te], labels[te]


def test_judge_is_accurate_on_held_out_real_digits(fitted):
    judge, acc, images, labels = fitted
    assert acc >= 0.97
    assert judge.class_match(images, labels) == pytest.approx(acc)


def test_class_match_counts_wrong_prompts(fitted):
    judge, _, images, labels = fitted
    wrong = (labels + 1) % 10  # every prompt names another digit
    assert judge.class_match(images, wrong) < 0.05
    half = labels.clone()
    half[::2] = wrong[::2]
    assert judge.class_match(images, half) == pytest.approx(0.5, abs=0.03)


def test_judge_errors_name_the_problem(fitted):
    judge = fitted[0]
    with pytest.raises(ValueError, match="fitted on"):
        judge.predict(torch.zeros(2, 1, 8, 8))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        judge.predict(torch.zeros(2, 16, 16))
    with pytest.raises(RuntimeError, match="fit"):
        ClassJudge().predict(torch.zeros(2, 1, 16, 16))
    with pytest.raises(ValueError, match="two classes"):
        ClassJudge().fit(torch.zeros(4, 1, 4, 4), torch.zeros(4, dtype=torch.long))
