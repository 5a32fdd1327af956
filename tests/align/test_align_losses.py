"""Every loss of align/losses.py against a brute-force reference written as plain loops.

References work on 0-dim float64 tensors one element at a time, so autograd gives their
gradients; the fast losses must match values and gradients (relative error < 1e-10 in float64,
< 1e-5 for float32 inputs), including B = 1, duplicate rows, identical embeddings and masks that
remove every negative of a row.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from modalab.align.fine_grained import filip_logits, multi_granularity_loss, multi_granularity_terms
from modalab.align.losses import (
    hard_negative_info_nce,
    hcl_info_nce,
    info_nce,
    label_targets,
    same_label_mask,
    siglip,
    soft_label_info_nce,
)

# ----------------------------------------------------------------------------- references


def _dot(x, y):
    total = x[0] * y[0]
    for d in range(1, x.shape[0]):
        total = total + x[d] * y[d]
    return total


def _lse(vals):
    m = max(v.item() for v in vals)
    total = sum(torch.exp(v - m) for v in vals)
    return m + torch.log(total)


def _ref_logits(img, txt, s):
    return [[s * _dot(img[i], txt[j]) for j in range(txt.shape[0])] for i in range(img.shape[0])]


def _excluded(mask, i, j):
    return mask is not None and i != j and bool(mask[i, j])


def _directions(img, txt, s, mask):
    """Yield (row logits list, positive position, exclusion flags) for both directions."""
    lg = _ref_logits(img, txt, s)
    b = len(lg)
    for i in range(b):  # image -> text
        yield [lg[i][j] for j in range(b)], i, [_excluded(mask, i, j) for j in range(b)], "i2t"
    for j in range(b):  # text -> image
        yield [lg[i][j] for i in range(b)], j, [_excluded(mask, i, j) for i in range(b)], "t2i"


def _symmetric_mean(rows, b):
    i2t = sum(r for r, d in rows if d == "i2t") / b
    t2i = sum(r for r, d in rows if d == "t2i") / b
    return 0.5 * (i2t + t2i)


def ref_info_nce(img, txt, s, mask=None):
    rows = []
    for row, p, ex, d in _directions(img, txt, s, mask):
        terms = [row[p]] + [row[j] for j in range(len(row)) if j != p and not ex[j]]
        rows.append((_lse(terms) - row[p], d))
    return _symmetric_mean(rows, img.shape[0])


def ref_siglip(img, txt, s, bias, mask=None):
    lg = _ref_logits(img, txt, s)
    b = len(lg)
    total = 0.0
    for i in range(b):
        for j in range(b):
            if _excluded(mask, i, j):
                continue
            z = (1.0 if i == j else -1.0) * (lg[i][j] + bias)
            total = total + torch.clamp(-z, min=0) + torch.log1p(torch.exp(-torch.abs(z)))
    return total / b


def ref_hard(img, txt, s, k, mask=None):
    rows = []
    for row, p, ex, d in _directions(img, txt, s, mask):
        cand = [j for j in range(len(row)) if j != p and not ex[j]]
        cand = sorted(cand, key=lambda j: (-row[j].item(), j))[:k]
        rows.append((_lse([row[p]] + [row[j] for j in cand]) - row[p], d))
    return _symmetric_mean(rows, img.shape[0])


def ref_hcl(img, txt, s, beta, tau_plus, mask=None):
    rows = []
    for row, p, ex, d in _directions(img, txt, s, mask):
        negs = [row[j] for j in range(len(row)) if j != p and not ex[j]]
        if not negs:
            rows.append((0.0 * row[p], d))
            continue
        n = len(negs)
        imp = [torch.exp(beta * v) for v in negs]
        z = sum(imp)
        ng = n * sum(w / z * torch.exp(v) for w, v in zip(imp, negs))
        if tau_plus > 0:
            ng = (ng - tau_plus * n * torch.exp(row[p])) / (1 - tau_plus)
            ng = torch.maximum(ng, n * torch.exp(-torch.as_tensor(s, dtype=torch.float64)))
        rows.append((-torch.log(torch.exp(row[p]) / (torch.exp(row[p]) + ng)), d))
    return _symmetric_mean(rows, img.shape[0])


def ref_soft(img, txt, s, targets, smoothing, mask=None):
    b = img.shape[0]
    rows = []
    for row, p, ex, d in _directions(img, txt, s, mask):
        valid = [j for j in range(b) if j == p or not ex[j]]
        y = [float(targets[p, j] if d == "i2t" else targets[j, p]) for j in valid]
        tot = sum(y)
        y = [(1 - smoothing) * v / tot + smoothing / len(valid) for v in y]
        z = _lse([row[j] for j in valid])
        rows.append((-sum(yy * (row[j] - z) for yy, j in zip(y, valid)), d))
    return _symmetric_mean(rows, b)


def ref_filip(it, tt, im=None, tm=None):
    b, c = it.shape[0], tt.shape[0]
    iv = [[k for k in range(it.shape[1]) if im is None or im[x, k]] for x in range(b)]
    tv = [[r for r in range(tt.shape[1]) if tm is None or tm[y, r]] for y in range(c)]
    i2t = [[None] * c for _ in range(b)]
    t2i = [[None] * b for _ in range(c)]
    for x in range(b):
        for y in range(c):
            sims = {(k, r): _dot(it[x, k], tt[y, r]) for k in iv[x] for r in tv[y]}
            i2t[x][y] = sum(max((sims[k, r] for r in tv[y]), key=lambda v: v.item()) for k in iv[x]) / len(iv[x])
            t2i[y][x] = sum(max((sims[k, r] for k in iv[x]), key=lambda v: v.item()) for r in tv[y]) / len(tv[y])
    return i2t, t2i


def ref_ce_from_matrices(i2t, t2i, s, mask=None):
    b = len(i2t)
    rows = []
    for i in range(b):
        terms = [s * i2t[i][j] for j in range(b) if j == i or not _excluded(mask, i, j)]
        rows.append((_lse(terms) - s * i2t[i][i], "i2t"))
    for j in range(b):
        terms = [s * t2i[j][i] for i in range(b) if i == j or not _excluded(mask, i, j)]
        rows.append((_lse(terms) - s * t2i[j][j], "t2i"))
    return _symmetric_mean(rows, b)


# ------------------------------------------------------------------------------- helpers


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    den = b.norm().item()
    # an exactly-zero quantity (e.g. the gradient for identical embeddings) is only known up to
    # rounding: compare it absolutely
    return (a - b).norm().item() / den if den > 1e-8 else (a - b).norm().item()


def emb(b, d, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(b, d, generator=g, dtype=torch.float64), dim=1).to(dtype)


def full_row_mask(b):
    m = torch.zeros(b, b, dtype=torch.bool)
    m[0, :] = True
    m[:, 0] = True  # row 0 loses every negative in both directions
    return m


def random_mask(b, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, b, generator=g) < 0.4


def cases():
    """(name, image, text, mask) covering the required corner cases."""
    i5, t5 = emb(5, 3, 1), emb(5, 3, 2)
    dup_i, dup_t = i5.clone(), t5.clone()
    dup_t[2], dup_i[3] = dup_t[0], dup_i[1]
    same = emb(1, 3, 3).expand(4, 3).contiguous()
    return [
        ("random", i5, t5, None),
        ("b1", emb(1, 3, 4), emb(1, 3, 5), None),
        ("b1_mask", emb(1, 3, 4), emb(1, 3, 5), torch.ones(1, 1, dtype=torch.bool)),
        ("duplicates", dup_i, dup_t, None),
        ("identical", same, same.clone(), None),
        ("mask_full_row", i5, t5, full_row_mask(5)),
        ("mask_all", i5, t5, torch.ones(5, 5, dtype=torch.bool)),
        ("mask_random", i5, t5, random_mask(5, 6)),
    ]


CASES = cases()
IDS = [c[0] for c in CASES]


def check(fast_fn, ref_fn, img, txt, scale=7.3, tol=1e-10, ref_inputs=None):
    """Compare value and gradients (image, text, logit scale) of fast vs reference."""
    a_i, a_t = img.clone().requires_grad_(), txt.clone().requires_grad_()
    a_s = torch.tensor(scale, dtype=torch.float64 if img.dtype == torch.float64 else torch.float32,
                       requires_grad=True)
    out = fast_fn(a_i, a_t, a_s)
    assert torch.isfinite(out), out
    out.backward()
    r_i = img.detach().double().clone().requires_grad_()
    r_t = txt.detach().double().clone().requires_grad_()
    r_s = torch.tensor(scale, dtype=torch.float64, requires_grad=True)
    ref = ref_fn(r_i, r_t, r_s)
    ref.backward()
    assert rel_err(out, ref) < tol, (out.item(), ref.item())
    for fast_g, ref_g in ((a_i.grad, r_i.grad), (a_t.grad, r_t.grad), (a_s.grad, r_s.grad)):
        assert torch.isfinite(fast_g).all()
        assert rel_err(fast_g, ref_g) < tol, (fast_g, ref_g)
    return out


# --------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("name,img,txt,mask", CASES, ids=IDS)
def test_info_nce_matches_reference(name, img, txt, mask):
    out = check(lambda i, t, s: info_nce(i, t, s, mask=mask), lambda i, t, s: ref_info_nce(i, t, s, mask), img, txt)
    if name == "mask_all" or name.startswith("b1"):
        assert out.item() == 0.0  # only positives left: -log(1)


@pytest.mark.parametrize("name,img,txt,mask", CASES, ids=IDS)
def test_siglip_matches_reference(name, img, txt, mask):
    check(lambda i, t, s: siglip(i, t, s, -2.5, mask=mask), lambda i, t, s: ref_siglip(i, t, s, -2.5, mask), img, txt)


@pytest.mark.parametrize("name,img,txt,mask", CASES, ids=IDS)
def test_hard_negative_matches_reference_all_negatives(name, img, txt, mask):
    # k >= B - 1: ties (duplicates, identical rows) cannot change the selected set
    check(lambda i, t, s: hard_negative_info_nce(i, t, s, 10, mask=mask),
          lambda i, t, s: ref_hard(i, t, s, 10, mask), img, txt)


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("masked", [False, True])
def test_hard_negative_top_k_matches_reference(k, masked):
    img, txt = emb(6, 4, 11), emb(6, 4, 12)
    mask = random_mask(6, 13) if masked else None
    check(lambda i, t, s: hard_negative_info_nce(i, t, s, k, mask=mask),
          lambda i, t, s: ref_hard(i, t, s, k, mask), img, txt)


def test_hard_negative_with_all_negatives_is_info_nce():
    img, txt = emb(6, 4, 14), emb(6, 4, 15)
    assert rel_err(hard_negative_info_nce(img, txt, 5.0, k=5), info_nce(img, txt, 5.0)) < 1e-12


@pytest.mark.parametrize("beta,tau_plus", [(0.0, 0.0), (1.0, 0.0), (3.0, 0.0), (1.0, 0.1)])
@pytest.mark.parametrize("name,img,txt,mask", CASES, ids=IDS)
def test_hcl_matches_reference(name, img, txt, mask, beta, tau_plus):
    scale = 7.3 if tau_plus == 0 else 2.0  # small scale: debiasing does not hit the clamp everywhere
    check(lambda i, t, s: hcl_info_nce(i, t, s, beta, tau_plus, mask=mask),
          lambda i, t, s: ref_hcl(i, t, s, beta, tau_plus, mask), img, txt, scale=scale)


def test_hcl_clamp_branch_matches_reference():
    # identical embeddings make (Ng - tau_plus N e^pos) small: the e^{-scale} floor is active
    same = emb(1, 3, 3).expand(4, 3).contiguous()
    check(lambda i, t, s: hcl_info_nce(i, t, s, 1.0, 0.5),
          lambda i, t, s: ref_hcl(i, t, s, 1.0, 0.5), same, same.clone(), scale=3.0)


def test_hcl_beta_zero_is_info_nce():
    img, txt = emb(6, 4, 16), emb(6, 4, 17)
    assert rel_err(hcl_info_nce(img, txt, 5.0, beta=0.0), info_nce(img, txt, 5.0)) < 1e-12


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("name,img,txt,mask", CASES, ids=IDS)
def test_soft_label_matches_reference(name, img, txt, mask, smoothing):
    b = img.shape[0]
    g = torch.Generator().manual_seed(21)
    targets = torch.rand(b, b, generator=g, dtype=torch.float64) + torch.eye(b, dtype=torch.float64)
    check(lambda i, t, s: soft_label_info_nce(i, t, s, targets, smoothing=smoothing, mask=mask),
          lambda i, t, s: ref_soft(i, t, s, targets, smoothing, mask), img, txt)


def test_soft_label_identity_targets_is_info_nce_and_labels_share_mass():
    img, txt = emb(6, 4, 18), emb(6, 4, 19)
    assert rel_err(soft_label_info_nce(img, txt, 5.0), info_nce(img, txt, 5.0)) < 1e-12
    labels = torch.tensor([0, 1, 0, 2, 1, 0])
    y = label_targets(labels)
    assert torch.allclose(y.sum(1), torch.ones(6))
    assert y[0, 2] == pytest.approx(1 / 3) and y[0, 1] == 0
    check(lambda i, t, s: soft_label_info_nce(i, t, s, y.double(), smoothing=0.05),
          lambda i, t, s: ref_soft(i, t, s, y.double(), 0.05), img, txt)


def test_soft_label_rejects_targets_without_mass():
    img, txt = emb(3, 2, 1), emb(3, 2, 2)
    targets = torch.zeros(3, 3, dtype=torch.float64)
    targets[0, 1] = 1.0
    with pytest.raises(ValueError, match="no mass"):
        soft_label_info_nce(img, txt, 2.0, targets, mask=torch.ones(3, 3, dtype=torch.bool))


def test_same_label_mask():
    m = same_label_mask(torch.tensor([3, 1, 3, 3]))
    expected = torch.tensor([[0, 0, 1, 1], [0, 0, 0, 0], [1, 0, 0, 1], [1, 0, 1, 0]], dtype=torch.bool)
    assert torch.equal(m, expected)


# ---------------------------------------------------------------------- multi-granularity


def tokens(b, n, d, seed):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(b, n, d, generator=g, dtype=torch.float64), dim=-1)


def test_filip_logits_match_reference_with_padding():
    it, tt = tokens(3, 4, 5, 31), tokens(3, 3, 5, 32)
    im = torch.tensor([[1, 1, 0, 1], [1, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    tm = torch.tensor([[1, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=torch.bool)
    i2t, t2i = filip_logits(it, tt, im, tm)
    r_i2t, r_t2i = ref_filip(it, tt, im, tm)
    assert rel_err(i2t, torch.stack([torch.stack(r) for r in r_i2t])) < 1e-12
    assert rel_err(t2i, torch.stack([torch.stack(r) for r in r_t2i])) < 1e-12


@pytest.mark.parametrize("masked", [False, True])
def test_multi_granularity_matches_reference(masked):
    b, d = 4, 5
    img, txt = emb(b, d, 41), emb(b, d, 42)
    it, tt = tokens(b, 3, d, 43), tokens(b, 2, d, 44)
    tm = torch.tensor([[1, 1], [1, 0], [1, 1], [0, 1]], dtype=torch.bool)
    regions, phrases = emb(5, d, 45), emb(4, d, 46)
    ri, pi = torch.tensor([0, 1, 1, 3, 4]), torch.tensor([0, 1, 2, 3, 3])
    mask = full_row_mask(b) if masked else None
    weights = (1.0, 0.5, 0.25)
    leaves = [img, txt, it, tt, regions, phrases]

    def fast(i, t, s):
        return multi_granularity_loss(i, t, s, weights=weights, mask=mask, region_emb=r_, phrase_emb=p_,
                                      region_index=ri, phrase_index=pi, image_tokens=it_,
                                      text_tokens=tt_, text_token_mask=tm)

    def ref(i, t, s):
        g = ref_info_nce(i, t, s, mask)
        rmask = torch.zeros(5, 5, dtype=torch.bool)
        for a in range(5):
            for c in range(5):
                rmask[a, c] = bool(ri[a] == ri[c] or pi[a] == pi[c])
        r = ref_info_nce(torch.stack([rr_[x] for x in ri]), torch.stack([pr_[x] for x in pi]), s, rmask)
        i2t, t2i = ref_filip(itr_, ttr_, None, tm)
        tok = ref_ce_from_matrices(i2t, t2i, s, mask)
        return weights[0] * g + weights[1] * r + weights[2] * tok

    r_, p_, it_, tt_ = (x.clone().requires_grad_() for x in (regions, phrases, it, tt))
    rr_, pr_, itr_, ttr_ = (x.clone().requires_grad_() for x in (regions, phrases, it, tt))
    check(fast, ref, img, txt)
    for a, c in ((r_, rr_), (p_, pr_), (it_, itr_), (tt_, ttr_)):
        assert rel_err(a.grad, c.grad) < 1e-10
    assert len(leaves) == 6


def test_multi_granularity_terms_and_levels_skipped():
    img, txt = emb(3, 4, 51), emb(3, 4, 52)
    terms = multi_granularity_terms(img, txt, 4.0)
    assert set(terms) == {"global"}
    assert multi_granularity_loss(img, txt, 4.0, weights=(2.0, 9.0, 9.0)) == pytest.approx(
        2.0 * info_nce(img, txt, 4.0).item(), rel=1e-12
    )
    with pytest.raises(ValueError, match="region_emb, phrase_emb"):
        multi_granularity_terms(img, txt, 4.0, region_emb=img)


# ------------------------------------------------------------------- dtypes and float32


LOSSES = {
    "info_nce": lambda i, t, s, m: info_nce(i, t, s, mask=m),
    "siglip": lambda i, t, s, m: siglip(i, t, s, -1.0, mask=m),
    "hard": lambda i, t, s, m: hard_negative_info_nce(i, t, s, 2, mask=m),
    "hcl": lambda i, t, s, m: hcl_info_nce(i, t, s, 1.5, mask=m),
    "soft": lambda i, t, s, m: soft_label_info_nce(i, t, s, smoothing=0.1, mask=m),
}
REFS = {
    "info_nce": lambda i, t, s, m: ref_info_nce(i, t, s, m),
    "siglip": lambda i, t, s, m: ref_siglip(i, t, s, -1.0, m),
    "hard": lambda i, t, s, m: ref_hard(i, t, s, 2, m),
    "hcl": lambda i, t, s, m: ref_hcl(i, t, s, 1.5, 0.0, m),
    "soft": lambda i, t, s, m: ref_soft(i, t, s, torch.eye(i.shape[0]), 0.1, m),
}


@pytest.mark.parametrize("loss", sorted(LOSSES))
@pytest.mark.parametrize("masked", [False, True])
def test_float32_inputs_match_float64_reference(loss, masked):
    img, txt = emb(6, 4, 61, torch.float32), emb(6, 4, 62, torch.float32)
    mask = full_row_mask(6) if masked else None
    out = check(lambda i, t, s: LOSSES[loss](i, t, s, mask), lambda i, t, s: REFS[loss](i, t, s, mask),
                img, txt, tol=1e-5)
    assert out.dtype == torch.float32


@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_bfloat16_inputs_accumulate_in_float32(loss):
    img, txt = emb(6, 4, 71, torch.bfloat16), emb(6, 4, 72, torch.bfloat16)
    out = LOSSES[loss](img, txt, torch.tensor(7.0), None)
    assert out.dtype == torch.float32
    ref = LOSSES[loss](img.double(), txt.double(), torch.tensor(7.0, dtype=torch.float64), None)
    assert rel_err(out, ref) < 1e-5  # same bf16-rounded values, float32 vs float64 accumulation


def test_bad_mask_is_rejected_with_shape_in_message():
    img, txt = emb(3, 2, 1), emb(3, 2, 2)
    with pytest.raises(ValueError, match=r"\(3, 3\) bool"):
        info_nce(img, txt, 1.0, mask=torch.zeros(3, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="k must be >= 1"):
        hard_negative_info_nce(img, txt, 1.0, k=0)


def test_masked_rows_have_zero_gradient_and_are_exact_zero():
    img, txt = emb(4, 3, 81).requires_grad_(), emb(4, 3, 82).requires_grad_()
    m = torch.ones(4, 4, dtype=torch.bool)
    for fn in (lambda: info_nce(img, txt, 5.0, mask=m), lambda: hcl_info_nce(img, txt, 5.0, mask=m),
               lambda: hard_negative_info_nce(img, txt, 5.0, mask=m),
               lambda: soft_label_info_nce(img, txt, 5.0, mask=m)):
        img.grad = txt.grad = None
        out = fn()
        out.backward()
        assert out.item() == 0.0
        assert img.grad.abs().max() == 0 and txt.grad.abs().max() == 0
    assert math.isfinite(siglip(img, txt, 5.0, -1.0, mask=m).item())


# ------------------------------------------------------------------ registered objectives


def _build(name, **fields):
    from modalab import registry
    import modalab.align.objectives_extended  # noqa: F401  (registers the losses)

    entry = registry.get("loss", name)
    return entry.builder(entry.schema.model_validate({"name": name, **fields}))


def test_objectives_apply_the_same_label_mask():
    img, txt = emb(6, 4, 91), emb(6, 4, 92)
    labels = torch.tensor([0, 1, 0, 2, 1, 3])
    m = same_label_mask(labels)
    s = torch.tensor(6.0, dtype=torch.float64)
    expected = {
        "hard_negative_info_nce": hard_negative_info_nce(img, txt, s, 3, mask=m),
        "hcl_info_nce": hcl_info_nce(img, txt, s, 0.5, mask=m),
        "soft_label_info_nce": soft_label_info_nce(img, txt, s, smoothing=0.1, mask=m),
        "multi_granularity": info_nce(img, txt, s, mask=m),
    }
    fields = {"hard_negative_info_nce": {"k": 3}, "hcl_info_nce": {"beta": 0.5}}
    for name, value in expected.items():
        obj = _build(name, mask_same_label=True, **fields.get(name, {}))
        assert rel_err(obj(img, txt, s, labels=labels), value) < 1e-12, name
        unmasked = _build(name, **fields.get(name, {}))(img, txt, s, labels=labels)
        assert rel_err(unmasked, value) > 1e-6, name  # labels alone do not mask


def test_soft_label_objective_label_targets_and_conflict():
    img, txt = emb(6, 4, 93), emb(6, 4, 94)
    labels = torch.tensor([0, 1, 0, 2, 1, 3])
    obj = _build("soft_label_info_nce", targets="label", smoothing=0.0)
    expected = soft_label_info_nce(img, txt, 6.0, label_targets(labels).double())
    assert rel_err(obj(img, txt, 6.0, labels=labels), expected) < 1e-12
    with pytest.raises(Exception, match="contradict"):
        _build("soft_label_info_nce", targets="label", mask_same_label=True)
    with pytest.raises(Exception, match="k"):
        _build("hard_negative_info_nce", k=0)


def test_sampled_objective_uses_progress_and_multi_granularity_takes_levels():
    img, txt = emb(8, 4, 95), emb(8, 4, 96)
    obj = _build("sampled_info_nce", negatives={"name": "curriculum", "schedule": [[0, 0.0], [0.5, 1.0]]},
                 num_negatives=3)
    assert obj.sampler.hard_fraction(0.7) == 1.0
    obj.set_progress(0.9)  # all hard: equals the top-3 hard-negative loss
    assert rel_err(obj(img, txt, 6.0), hard_negative_info_nce(img, txt, 6.0, 3)) < 1e-12
    with pytest.raises(Exception, match="unknown negatives"):
        _build("sampled_info_nce", negatives={"name": "nope"})
    mg = _build("multi_granularity", token_weight=0.5)
    it, tt = tokens(8, 2, 4, 97), tokens(8, 3, 4, 98)
    expected = multi_granularity_loss(img, txt, 6.0, weights=(1.0, 1.0, 0.5), image_tokens=it, text_tokens=tt)
    assert rel_err(mg(img, txt, 6.0, image_tokens=it, text_tokens=tt), expected) < 1e-12
