import numpy as np
import torch

from birdsed.config import AugmentConfig
from birdsed.data.augment import add_background, loader_spec_transform, mixup, random_gain, spec_augment


def batch():
    wave = torch.stack([torch.full((10,), float(i)) for i in range(4)])
    targets = torch.eye(4)
    weights = torch.tensor([1.0, 2.0, 3.0, 4.0])
    return wave, targets, weights


def test_mixup_off_is_identity():
    wave, t, w = batch()
    out = mixup(wave, t, w, AugmentConfig(mixup_prob=0.0))
    assert all(torch.equal(a, b) for a, b in zip(out, (wave, t, w), strict=True))


def test_constant_weight_mixup_mixes_waves_targets_and_weights():
    wave, t, w = batch()
    g = torch.Generator().manual_seed(0)
    cfg = AugmentConfig(mixup_prob=1.0, mixup_weight=0.5, mixup_targets="max")
    mw, mt, mww = mixup(wave, t, w, cfg, generator=g)
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(4, generator=g)
    for i in range(4):
        j = int(perm[i])
        if i == j:  # a sample drawn as its own partner is left alone
            assert torch.equal(mw[i], wave[i])
            continue
        assert torch.allclose(mw[i], 0.5 * wave[i] + 0.5 * wave[j])
        assert mt[i, i] == 1 and mt[i, j] == 1 and mt[i].sum() == 2
        assert mww[i] == (w[i] + w[j]) / 2


def test_mixup_target_rules():
    t = torch.tensor([[0.6, 0.0], [0.8, 1.0]])
    wave, w = torch.zeros(2, 4), torch.ones(2)
    g = torch.Generator().manual_seed(1)
    for rule, expect0 in (("max", [0.8, 1.0]), ("sum_clip", [1.0, 1.0]), ("weighted", [0.7, 0.5])):
        for _ in range(20):  # find a draw where sample 0 is mixed with sample 1
            cfg = AugmentConfig(mixup_prob=1.0, mixup_weight=0.5, mixup_targets=rule)
            _, mt, _ = mixup(wave, t, w, cfg, generator=g)
            if not torch.equal(mt[0], t[0]):
                break
        assert torch.allclose(mt[0], torch.tensor(expect0)), rule


def test_beta_mixup_partner_share_is_at_most_half():
    wave = torch.stack([torch.zeros(5), torch.ones(5)])
    t, w = torch.eye(2), torch.ones(2)
    for seed in range(10):
        mw, _, _ = mixup(
            wave, t, w, AugmentConfig(mixup_prob=1.0, mixup_alpha=0.4), torch.Generator().manual_seed(seed)
        )
        assert mw[0].max() <= 0.5 + 1e-6 and mw[1].min() >= 0.5 - 1e-6


def test_spec_augment_masks_whole_rows_and_columns_per_sample():
    torch.manual_seed(0)
    mel = torch.randn(4, 1, 32, 100)
    cfg = AugmentConfig(spec_time_masks=2, spec_time_mask_frames=20, spec_freq_masks=2, spec_freq_mask_bins=8)
    out = spec_augment(mel.clone(), cfg)
    assert out.shape == mel.shape
    changed = out != mel
    assert changed.any()
    cols = changed.all(dim=2).squeeze(1)  # (B, T): time columns fully masked
    rows = changed.all(dim=3).squeeze(1)  # (B, M)
    assert cols.any() or rows.any()
    assert not torch.equal(changed[0], changed[1])


def test_background_is_mixed_at_the_requested_snr():
    rng = np.random.default_rng(0)
    sig = rng.standard_normal(32000).astype(np.float32)
    noise = 3 * rng.standard_normal(32000).astype(np.float32)
    out = add_background(sig, noise, 10.0)
    snr = 10 * np.log10(np.mean(sig**2) / np.mean((out - sig) ** 2))
    assert abs(snr - 10.0) < 1e-3


def test_gain_range():
    x = np.ones(10, dtype=np.float32)
    gains = [20 * np.log10(random_gain(x, np.random.default_rng(s), 6.0)[0]) for s in range(200)]
    assert min(gains) >= -6 and max(gains) <= 6 and max(gains) - min(gains) > 10


def test_albumentations_masks_without_clipping():
    mel = np.random.default_rng(0).standard_normal((64, 200)).astype(np.float32) * 3
    t = loader_spec_transform(AugmentConfig(spec_time_masks=2, spec_freq_masks=2))
    outs = [t(image=mel)["image"] for _ in range(10)]
    assert all(o.shape == mel.shape for o in outs)
    assert any((o == 0).sum() > 100 for o in outs)
    kept = [o[o != 0] for o in outs]
    assert min(k.min() for k in kept) < -3  # negative log-mel values survive


def test_a_mixture_with_an_unlabelled_window_stays_unlabelled():
    """A weight-0 window (no labels: a distillation window) mixed into a labelled one gives weight 0, never a
    labelled sample whose partner's calls count as negatives (issue 46, honest folds)."""
    wave, t, w = batch()
    w[2] = 0.0
    cfg = AugmentConfig(mixup_prob=1.0, mixup_weight=0.5, mixup_targets="max")
    for seed in range(8):
        g = torch.Generator().manual_seed(seed)
        _, _, mw = mixup(wave, t, w, cfg, generator=g)
        perm = torch.randperm(4, generator=torch.Generator().manual_seed(seed))
        for i in range(4):
            j = int(perm[i])
            mixed_with_unlabelled = i == 2 or (j == 2 and i != j)
            assert (mw[i] == 0) == mixed_with_unlabelled, (seed, i, j, mw)
