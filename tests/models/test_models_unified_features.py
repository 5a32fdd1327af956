"""The unified model's understand path reading continuous image features (``feature_dim``),
checked against the plain code path, and the ``unified`` task's validation evaluation."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from modalab.models.unified import UnifiedModel, UnifiedTransformer
from modalab.vision.quantizers import VectorQuantizer
from modalab.vision.tokenizer import ImageTokenizer

V, K, N = 10, 8, 4


def _pair() -> tuple[UnifiedTransformer, torch.Tensor]:
    torch.manual_seed(0)
    m = UnifiedTransformer(V, K, N, dim=32, depth=2, heads=4, max_text=6, feature_dim=K).eval()
    # features = one-hot codes and image_in = the code embeddings: the features path must then
    # compute exactly what the code path computes
    lin = nn.Linear(K, 32, bias=False)
    lin.weight.data.copy_(m.tok_emb.weight.data[V : V + K].t())
    m.image_in = lin
    return m, torch.randint(0, K, (3, N))


def test_features_in_place_of_codes_reproduce_the_code_path():
    m, codes = _pair()
    feats = F.one_hot(codes, K).float()  # (B, N, K)
    text = torch.randint(0, V, (3, 5))
    pad = torch.zeros(3, 5, dtype=torch.bool)
    pad[0, 3:] = True
    torch.testing.assert_close(m.understand_loss(codes, text, pad, features=feats),
                               m.understand_loss(codes, text, pad))
    assert torch.equal(m.answer(codes, 5, features=feats), m.answer(codes, 5))
    other = torch.randint(0, K, (3, N))  # the features, not the codes, decide
    assert torch.equal(m.answer(other, 5, features=feats), m.answer(codes, 5))


def test_features_need_feature_dim_and_reach_image_in():
    plain = UnifiedTransformer(V, K, N, dim=32, depth=1, heads=4, max_text=6)
    codes, text = torch.randint(0, K, (2, N)), torch.randint(0, V, (2, 3))
    with pytest.raises(ValueError, match="feature_dim"):
        plain.understand_loss(codes, text, features=torch.rand(2, N, 5))
    m = UnifiedTransformer(V, K, N, dim=32, depth=1, heads=4, max_text=6, feature_dim=5)
    m.understand_loss(codes, text, features=torch.rand(2, N, 5)).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.image_in.parameters())


def test_model_understands_from_the_encoder_latents():
    torch.manual_seed(0)
    tok = ImageTokenizer(VectorQuantizer(K, 6, kmeans_init=False), in_channels=1, channels=8,
                         num_down=2, latent_dim=6).eval()
    tr = UnifiedTransformer(V, K, N, dim=32, depth=1, heads=4, max_text=6, feature_dim=6).eval()
    model = UnifiedModel(tr, tok, image_shape=(1, 8, 8), token_grid=(2, 2))
    x = torch.rand(3, 1, 8, 8)
    feats = model.image_features(x)
    assert feats.shape == (3, N, 6)
    z = tok.encoder(x)  # (B, D, 2, 2): raster order of the codes
    torch.testing.assert_close(feats[:, 1], z[:, :, 0, 1])
    codes = tok.encode(x).flatten(1)
    assert torch.equal(model("understand", image=x, max_new_tokens=4),
                       tr.answer(codes, 4, features=feats))


RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "unified_digits.yaml"


def test_task_evaluates_the_validation_split_with_latents(tmp_path):
    from modalab import registry
    from modalab.config import load
    from modalab.experiment.eval_splits import eval_split
    from modalab.experiment.rundir import RunDir

    tiny = ["model.tokenizer.pretrain_steps=5", "model.transformer.dim=32", "model.transformer.depth=1",
            "model.diffusion.channels=8", "train.steps=4", "eval.generate_samples=12", "eval.ddim_steps=2",
            "model.understand_input=latents", "train.stages=[]"]
    task = registry.build("task", "unified", load(RECIPE, tiny), RunDir.create(tmp_path / "r", str(tmp_path), "u"))
    assert task.model.transformer.image_in is not None
    loss, _ = task.step(next(iter(task.train_loader())))
    loss.backward()
    assert task.model.transformer.image_in[1].weight.grad is not None
    res = eval_split(task, "val")
    assert set(res) == {"val_understand_accuracy", "val_generate_class_match_ar",
                        "val_generate_class_match_diffusion"}
    assert all(0.0 <= v <= 1.0 for v in res.values())
    with pytest.raises(ValueError, match="split='train'"):
        task.evaluate(final=False, split="train")
