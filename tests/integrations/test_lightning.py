"""The Lightning callback: sigma drawn per batch in training, fixed in validation, sampler state checkpointed."""
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import vant

pl = pytest.importorskip("lightning.pytorch")
from vant.integrations.lightning import VantCallback, batch_size  # noqa: E402


class Tiny(pl.LightningModule):
    """Records what sigma the input site holds at every training and validation step."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
        vant.inject_noise_(self.net)
        self.train_sigmas, self.val_sigmas = [], []

    def _sigma(self):
        return vant.noise_sites(self.net)["input"].sigma.detach().clone()

    def training_step(self, batch, batch_idx):
        x, y = batch
        self.train_sigmas.append(self._sigma())
        return nn.functional.cross_entropy(self.net(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.val_sigmas.append(self._sigma())
        self.log("val_loss", nn.functional.cross_entropy(self.net(x), y))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)


def _loaders():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(96, 6, generator=g), torch.randint(0, 3, (96,), generator=g)
    return (DataLoader(TensorDataset(x[:64], y[:64]), batch_size=16, shuffle=True, generator=g),
            DataLoader(TensorDataset(x[64:], y[64:]), batch_size=16))


def _trainer(callback, epochs=2):
    return pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, callbacks=[callback], logger=False,
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      num_sanity_val_steps=1)


def test_sigma_is_drawn_per_batch_in_training_and_fixed_in_validation():
    torch.manual_seed(0)
    model, (train, val) = Tiny(), _loaders()
    sampler = vant.VantSampler(1.0, theta=0.4, alpha=0.45, seed=3)
    _trainer(VantCallback(sampler, eval_sigma=0.7)).fit(model, train, val)

    assert len(model.train_sigmas) == 2 * 4  # 2 epochs of 4 batches
    for s in model.train_sigmas:  # one sigma per sample, from the VANT half-normal (floor alpha * sigma_train)
        assert s.shape == (16,) and bool((s >= 0.45 - 1e-6).all())
    distinct = {tuple(s.tolist()) for s in model.train_sigmas}
    assert len(distinct) == len(model.train_sigmas)  # a fresh draw every batch
    # the draws are exactly the sampler's stream, in order
    replay = vant.VantSampler(1.0, theta=0.4, alpha=0.45, seed=3)
    for s in model.train_sigmas:
        assert torch.equal(s, replay(16))
    assert len(model.val_sigmas) == 1 + 2 * 2  # the sanity check, then 2 batches after each epoch
    for s in model.val_sigmas:
        assert s.dim() == 0 and s.item() == pytest.approx(0.7)


def test_nt_number_and_clean_none():
    torch.manual_seed(0)
    model, (train, val) = Tiny(), _loaders()
    _trainer(VantCallback(0.5), epochs=1).fit(model, train, val)
    assert all(torch.equal(s, torch.full((16,), 0.5)) for s in model.train_sigmas)
    assert all(s.item() == 0.0 for s in model.val_sigmas)  # eval_sigma defaults to clean evaluation

    model = Tiny()
    _trainer(VantCallback(None, eval_sigma=0.2), epochs=1).fit(model, train, val)
    assert all(s.dim() == 0 and s.item() == 0.0 for s in model.train_sigmas)
    assert all(s.item() == pytest.approx(0.2) for s in model.val_sigmas)


def test_sampler_state_round_trips_through_the_callback_state():
    a = VantCallback(vant.VantSampler(1.0, theta=0.4, seed=1))
    a.sampler(16)
    state = a.state_dict()
    b = VantCallback(vant.VantSampler(1.0, theta=0.4, seed=99))
    b.load_state_dict(state)
    assert torch.equal(a.sampler(8), b.sampler(8))


def test_refusals():
    with pytest.raises(TypeError, match="sampler must be"):
        VantCallback("vant")
    with pytest.raises(ValueError, match="finite number >= 0"):
        VantCallback(0.5, eval_sigma=-1.0)
    plain = pl.LightningModule()
    with pytest.raises(RuntimeError, match="no noise sites"):
        VantCallback(0.5).setup(None, plain, "fit")
    assert batch_size({"image": torch.zeros(5, 3), "label": torch.zeros(5)}) == 5
    assert batch_size(("meta", [torch.zeros(7, 2)])) == 7
    with pytest.raises(TypeError, match="no tensor"):
        batch_size(["a", "b"])
