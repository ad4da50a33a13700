import torch
import torch.nn.functional as F

from birdsed.config import TrainConfig
from birdsed.training.losses import LOSSES, bce, build_loss, ce, focal, focal_bce


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(6, 5, generator=g) * 3
    targets = (torch.rand(6, 5, generator=g) > 0.7).float()
    return logits, targets


def test_focal_with_gamma_zero_is_bce():
    logits, targets = batch()
    assert torch.allclose(focal(logits, targets, gamma=0.0), bce(logits, targets), atol=1e-6)
    assert torch.allclose(bce(logits, targets), F.binary_cross_entropy_with_logits(logits, targets), atol=1e-6)


def test_focal_downweights_easy_examples():
    easy = torch.tensor([[8.0, -8.0]])
    hard = torch.tensor([[0.1, -0.1]])
    t = torch.tensor([[1.0, 0.0]])
    assert focal(easy, t) / bce(easy, t) < 1e-3
    assert focal(hard, t) / bce(hard, t) > 0.2


def test_focal_bce_is_the_weighted_sum():
    logits, targets = batch(1)
    got = focal_bce(logits, targets, gamma=2.0, focal_weight=0.3, bce_weight=0.7)
    assert torch.allclose(got, 0.3 * focal(logits, targets, gamma=2.0) + 0.7 * bce(logits, targets))


def test_ce_with_one_hot_targets_is_torch_cross_entropy():
    logits, _ = batch(2)
    labels = torch.tensor([0, 3, 1, 4, 2, 2])
    assert torch.allclose(ce(logits, F.one_hot(labels, 5).float()), F.cross_entropy(logits, labels), atol=1e-6)


def test_ce_soft_targets_share_mass_and_skip_empty_rows():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    targets = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    logp = F.log_softmax(logits[0], dim=0)
    expected = -(0.5 * logp[0] + 0.5 * logp[1]) / 2  # the empty row counts zero in the batch mean
    assert torch.allclose(ce(logits, targets), expected)


def test_sample_weights_weight_the_batch_mean():
    logits, targets = batch(3)
    w = torch.tensor([1.0, 0, 0, 0, 0, 0])
    for fn in LOSSES.values():
        assert torch.allclose(fn(logits, targets, w), fn(logits[:1], targets[:1]), atol=1e-6)


def test_label_smoothing_moves_targets_inward():
    logits = torch.tensor([[20.0, -20.0]])
    t = torch.tensor([[1.0, 0.0]])
    assert bce(logits, t, eps=0.2) > bce(logits, t) + 1.0  # over-confidence is now penalised


def test_registry_binds_config():
    logits, targets = batch(4)
    fn = build_loss(TrainConfig(loss="focal_bce", focal_gamma=0.0, focal_weight=1.0, bce_weight=1.0))
    assert torch.allclose(fn(logits, targets, None), 2 * bce(logits, targets), atol=1e-6)
