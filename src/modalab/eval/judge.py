"""A class judge for generated images: "does the image show the class the prompt asked for?"

Generation quality at this scale is scored the way class-conditional image models are checked
(a classifier's accuracy on samples, the idea behind Inception-score style metrics): a classifier
fitted on real training images predicts the class of each generated image, and the class-match
rate is the share whose prediction equals the prompted class. The judge is an RBF support-vector
machine (scikit-learn) on raw pixels in [0, 1]: no download, trained in a second, and ~99%
accurate on held-out real digits, so a low match rate means the generator, not the judge, failed.
Report the judge's own held-out accuracy next to any match rate (``fit`` returns it).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


class ClassJudge:
    """RBF-SVM on flattened pixels; images (N, C, H, W) in [0, 1], labels (N,) ints."""

    def __init__(self, C: float = 10.0, gamma: str | float = "scale") -> None:
        from sklearn.svm import SVC

        self.clf = SVC(C=C, gamma=gamma)
        self.shape: tuple[int, ...] | None = None

    @staticmethod
    def _flat(images: Tensor) -> np.ndarray:
        if images.dim() != 4:
            raise ValueError(f"ClassJudge: images must be (N, C, H, W), got shape {tuple(images.shape)}")
        return images.detach().float().cpu().flatten(1).numpy()

    def fit(self, images: Tensor, labels: Tensor, val_images: Tensor | None = None,
            val_labels: Tensor | None = None) -> float | None:
        """Fit on real images; returns the accuracy on ``val_*`` when given (else None)."""
        if len(images) != len(labels):
            raise ValueError(f"ClassJudge.fit: {len(images)} images but {len(labels)} labels")
        if len(set(labels.tolist())) < 2:
            raise ValueError("ClassJudge.fit: need images of at least two classes")
        self.shape = tuple(images.shape[1:])
        self.clf.fit(self._flat(images), labels.cpu().numpy())
        if val_images is None or val_labels is None:
            return None
        return float((self.predict(val_images) == val_labels.cpu()).float().mean())

    def predict(self, images: Tensor) -> Tensor:
        """(N, C, H, W) -> predicted classes (N,) int64."""
        if self.shape is None:
            raise RuntimeError("ClassJudge.predict: call fit(...) first")
        if images.dim() != 4:
            raise ValueError(f"ClassJudge: images must be (N, C, H, W), got shape {tuple(images.shape)}")
        if tuple(images.shape[1:]) != self.shape:
            raise ValueError(f"ClassJudge.predict: images of shape {tuple(images.shape[1:])}, "
                             f"the judge was fitted on {self.shape}")
        return torch.as_tensor(self.clf.predict(self._flat(images)), dtype=torch.long)

    def class_match(self, images: Tensor, prompted: Tensor) -> float:
        """Share of images whose predicted class equals the prompted class."""
        return float((self.predict(images) == prompted.cpu()).float().mean())
