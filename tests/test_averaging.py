"""Weight averaging (``train.averaging``): the averages are what they claim, validation and saved runs use them."""

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from birdsed.models import load_checkpoint
from birdsed.training.averaging import Averaging, averaging_callback
from birdsed.training.train import fit
from tests.conftest import tiny_cfg


class Linear(L.LightningModule):
    """A 3→1 regression whose weights after every step and at every validation are recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(3, 1)
        self.after_step: list[torch.Tensor] = []
        self.validated: list[torch.Tensor] = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        self.after_step.append(self.layer.weight.detach().clone())

    def validation_step(self, batch, batch_idx) -> None:
        if batch_idx == 0:
            self.validated.append(self.layer.weight.detach().clone())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.3)


def _train(callback: Averaging, epochs: int = 3) -> Linear:
    torch.manual_seed(0)
    x = torch.randn(16, 3)
    data = DataLoader(TensorDataset(x, x @ torch.tensor([[1.0], [-2.0], [0.5]])), batch_size=4)  # 4 steps/epoch
    module = Linear()
    trainer = L.Trainer(
        max_epochs=epochs, callbacks=[callback], logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(module, data, data)
    return module


def test_swa_is_the_mean_of_the_last_epochs_steps_and_validation_sees_it():
    module = _train(averaging_callback("swa", 0.0, swa_epochs=2, epochs=3))
    steps = torch.stack(module.after_step)  # (12, 1, 3)
    assert len(steps) == 12
    # epoch 0 is before the window: validated with its raw weights; then with the running mean of the window
    torch.testing.assert_close(module.validated[0], steps[3])
    torch.testing.assert_close(module.validated[1], steps[4:8].mean(0))
    torch.testing.assert_close(module.validated[2], steps[4:12].mean(0))
    torch.testing.assert_close(module.layer.weight, steps[4:12].mean(0))  # what fit leaves in the module
    assert not torch.allclose(steps[-1], steps[4:12].mean(0), atol=1e-3)  # the mean is not just the last step


def test_ema_follows_its_recursion():
    decay = 0.8
    module = _train(averaging_callback("ema", decay, swa_epochs=1, epochs=2), epochs=2)
    ema = module.after_step[0]
    expected = []
    for i, w in enumerate(module.after_step):
        ema = w if i == 0 else decay * ema + (1 - decay) * w
        expected.append(ema)
    torch.testing.assert_close(module.validated[0], expected[3])
    torch.testing.assert_close(module.validated[1], expected[7])
    torch.testing.assert_close(module.layer.weight, expected[7])


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="ema or swa"):
        Averaging("mean")


def test_a_run_saves_its_averaged_weights(tiny_root, tmp_path):
    cfg = tiny_cfg(tiny_root, tmp_path / "cache", "train.averaging=swa", "train.swa_epochs=1", "train.epochs=2")
    fit(cfg, out=tmp_path / "run")
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    averaged = {k.removeprefix("model."): v for k, v in state["state_dict"].items()}
    raw = {k.removeprefix("model."): v for k, v in state["current_model_state"].items()}
    saved = load_checkpoint(tmp_path / "run" / "last.pt")[0].state_dict()
    name = next(k for k, v in saved.items() if v.dtype.is_floating_point and not torch.equal(averaged[k], raw[k]))
    torch.testing.assert_close(saved[name], averaged[name])  # the run keeps the average, not the raw weights
    assert load_checkpoint(tmp_path / "run" / "best.pt")[0].state_dict()[name].shape == saved[name].shape
