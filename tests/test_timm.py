"""timm models by name (timm:<name>): where the paper placement puts noise in a CNN and in a ViT, and
runs on the bundled digits from the command line. Skipped where timm (an optional extra) is missing."""
import json
import sys

import pytest
import torch
from torch import nn

import vant
from vant.cli import main
from vant.config import ConfigError
from vant.models import check_model, create_model

TINY_VIT = {"img_size": 16, "patch_size": 4, "depth": 2, "embed_dim": 24, "num_heads": 2}


@pytest.fixture
def timm():
    return pytest.importorskip("timm")


def test_missing_timm_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm now raises ImportError
    with pytest.raises(ConfigError) as e:
        check_model("timm:resnet18")
    assert 'pip install "vant[timm]"' in str(e.value) and "\n" not in str(e.value)


def test_unknown_timm_model_and_reserved_kwargs(timm):
    with pytest.raises(ValueError, match="unknown timm model 'resnet19'; did you mean resnet18"):
        check_model("timm:resnet19")
    with pytest.raises(ValueError, match="must not set in_chans"):
        check_model("timm:resnet18", {"in_chans": 1})


def test_timm_resnet_sites_are_the_paper_placement(timm):
    model = create_model("timm:resnet18", num_classes=10, in_channels=1)
    assert model.conv1.in_channels == 1 and model.fc.out_features == 10
    names = vant.inject_noise_(model)
    modules = dict(model.named_modules())
    kinds = [type(modules[n]).__name__ for n in names[1:]]
    # 17 convs + 3 shortcut convs, the stem ReLU and two per block, max-pool, global pool, logits
    assert names[0] == "input" and len(names) == 41
    assert (kinds.count("Conv2d"), kinds.count("ReLU"), kinds.count("Linear")) == (20, 17, 1)
    assert "maxpool" in names and "global_pool.pool" in names and names[-1] == "fc"
    assert not any(isinstance(modules[n], nn.BatchNorm2d) for n in names[1:])  # noise before BN, never after


def test_timm_vit_sites_and_per_sample_sigma(timm):
    torch.manual_seed(0)
    model = create_model("timm:vit_tiny_patch16_224", num_classes=10, in_channels=1, **TINY_VIT).eval()
    x = torch.randn(2, 1, 16, 16)
    clean = model(x)
    keys = list(model.state_dict())
    names = vant.inject_noise_(model)
    block = ["attn.qkv", "attn.proj", "mlp.fc1", "mlp.act", "mlp.fc2"]
    # Linear outputs and the MLP's GELU; LayerNorm, the attention product/softmax (functions, not
    # modules), the residual adds and the class-token pooling (indexing) carry no site.
    assert names == ["input", "patch_embed.proj"] + [f"blocks.{i}.{b}" for i in range(2) for b in block] + ["head"]
    assert list(model.state_dict()) == keys
    vant.set_sigma_(model, 0.0)
    assert torch.equal(model(x), clean)  # silent sites are the plain model, bit for bit
    vant.set_sigma_(model, torch.tensor([0.0, 0.5]))  # one sigma per image, broadcast over [B, tokens, dim]
    out = model(x)
    assert torch.equal(out[0], clean[0]) and not torch.allclose(out[1], clean[1])


def test_a_grid_with_timm_models_expands(timm, tmp_path):
    from vant.experiments.spec import expand, load_spec

    spec = tmp_path / "timm.yaml"
    spec.write_text(f"""
base: {{train: {{epochs: 1}}, data: {{image_size: 16}}, out_dir: {tmp_path}}}
variants:
  cnn: {{model.name: "timm:resnet18"}}
  vit: {{model.name: "timm:vit_tiny_patch16_224", model.kwargs: {TINY_VIT}}}
""")
    jobs = expand(load_spec(spec))
    assert [j.config.model.name for j in jobs] == ["timm:resnet18", "timm:vit_tiny_patch16_224"]
    assert jobs[1].config.model.kwargs == TINY_VIT and jobs[0].path != jobs[1].path
    spec.write_text(spec.read_text().replace("timm:resnet18", "timm:resnet19"))
    with pytest.raises(ConfigError, match="variant 'cnn'.*unknown timm model 'resnet19'"):
        expand(load_spec(spec))


@pytest.mark.slow
@pytest.mark.parametrize("args", [
    ["model.name=timm:resnet18", "data.image_size=32"],
    ["model.name=timm:vit_tiny_patch16_224", "data.image_size=16", f"model.kwargs={json.dumps(TINY_VIT)}"],
], ids=["resnet18", "vit"])
def test_timm_models_train_and_sweep_on_digits(timm, tmp_path, args):
    out = tmp_path / "runs"
    assert main(["train", "-q", *args, "train.epochs=1", "eval.sigmas=[0.1,0.5,1.0]", "eval.repeats=2",
                 "device=cpu", f"out_dir={out}"]) == 0
    (run,) = out.iterdir()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["eval"]["sigmas"] == [0.1, 0.5, 1.0] and len(summary["eval"]["mean"]) == 3
    assert summary["auc"] is not None
    meta = (run / "config.yaml").read_text()
    assert f"timm: {timm.__version__}" in meta
