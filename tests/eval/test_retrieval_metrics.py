"""Retrieval ranks on hand-made similarity matrices, ties included."""

import torch

from modalab.eval.retrieval import match_matrix, retrieval_metrics, retrieval_ranks
from modalab.eval.zeroshot import zeroshot_accuracy


def test_ranks_known_matrix():
    sim = torch.tensor([[0.9, 0.1, 0.2], [0.8, 0.5, 0.1], [0.3, 0.4, 0.2]])
    eye = torch.eye(3, dtype=torch.bool)
    # row 0: own 0.9 is best -> 1; row 1: 0.8 above own 0.5 -> 2; row 2: 0.3 and 0.4 above 0.2 -> 3
    assert retrieval_ranks(sim, eye).tolist() == [1, 2, 3]
    assert retrieval_ranks(sim.T, eye).tolist() == [1, 1, 2]


def test_ties_are_pessimistic():
    sim = torch.tensor([[0.5, 0.5, 0.5], [0.5, 0.5, 0.1], [0.2, 0.2, 0.2]])
    eye = torch.eye(3, dtype=torch.bool)
    # a tie with a wrong item ranks below it
    assert retrieval_ranks(sim, eye).tolist() == [3, 2, 3]


def test_label_matching_counts_any_same_label_item():
    labels = torch.tensor([0, 0, 1])
    sim = torch.tensor([[0.1, 0.9, 0.5], [0.2, 0.3, 0.8], [0.7, 0.6, 0.65]])
    m = match_matrix(labels, 3, "label")
    assert retrieval_ranks(sim, m).tolist() == [1, 2, 2]
    assert retrieval_ranks(sim, match_matrix(labels, 3, "pair")).tolist() == [3, 2, 2]


def test_metrics_keys_and_values():
    emb = torch.eye(4)
    out = retrieval_metrics(emb, emb, None, "pair", ks=(1, 5, 10))
    for d in ("image_to_text", "text_to_image"):
        assert out[f"{d}_R@1"] == 1.0 and out[f"{d}_mean_rank"] == 1.0 and out[f"{d}_median_rank"] == 1.0
    txt = emb[[1, 0, 2, 3]]  # first two pairs swapped
    out = retrieval_metrics(emb, txt, None, "pair", ks=(1,))
    # images 0 and 1 score 0 with their own caption and tie with two other zeros: rank 4
    assert out["image_to_text_R@1"] == 0.5 and out["image_to_text_mean_rank"] == 2.5


def test_zeroshot_topk_with_ties():
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.7071, 0.7071]])
    cls = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    acc = zeroshot_accuracy(img, cls, torch.tensor([0, 0, 1]), ks=(1, 2))
    # third image ties both classes -> pessimistic rank 2
    assert acc["zeroshot_top1"] == 1 / 3 and acc["zeroshot_top2"] == 1.0


def test_pair_matching_counts_identical_captions():
    # pairs 0 and 2 share a caption: the text encoder gives them one embedding, so image 0 ties
    # between captions 0 and 2; without the tokens the tie is a miss, with them a hit
    tokens = torch.tensor([[5, 6, 0], [7, 0, 0], [5, 6, 0]])
    torch.manual_seed(0)
    image = torch.nn.functional.normalize(torch.randn(3, 8), dim=1)
    text = image.clone()
    text[2] = text[0]  # identical captions embed identically
    image[2] = image[0] + 0.05 * torch.randn(8)  # image 2: another instance of the same content
    plain = retrieval_metrics(image, text, None, "pair", ks=(1,))
    grouped = retrieval_metrics(image, text, None, "pair", ks=(1,), texts=tokens)
    assert plain["image_to_text_R@1"] == 1 / 3  # images 0 and 2 tie with the twin caption: misses
    assert grouped["image_to_text_R@1"] == 1.0
    assert grouped["text_to_image_R@1"] == 1.0
    m = match_matrix(None, 3, "pair", tokens)
    assert m.tolist() == [[True, False, True], [False, True, False], [True, False, True]]
    # distinct captions: the diagonal, as without tokens
    assert torch.equal(match_matrix(None, 3, "pair", torch.arange(3)[:, None]), torch.eye(3, dtype=torch.bool))


def test_pair_matching_rejects_token_rows_of_another_length():
    import pytest

    with pytest.raises(ValueError, match="2 token rows for 3 pairs"):
        match_matrix(None, 3, "pair", torch.zeros(2, 4, dtype=torch.long))
