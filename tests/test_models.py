"""Every registered model builds for the class counts and channel counts of the supported data sets,
runs forward and backward with noise, and has the spatial sizes the spec describes."""
import pytest
import torch
from torch import nn

import vant


@pytest.mark.parametrize("name", vant.list_models())
@pytest.mark.parametrize("classes,channels,size", [(10, 1, 32), (100, 3, 32), (200, 3, 64)])
def test_registered_models_forward_backward(name, classes, channels, size):
    if name.startswith("lenet") and size != 32:
        pytest.skip("LeNet-5 takes 32x32 inputs (data are resized for it)")
    if name == "resnet50" and classes != 200:
        pytest.skip("one ResNet-50 case is enough for the suite's time budget")
    model = vant.create_model(name, num_classes=classes, in_channels=channels)
    vant.inject_noise_(model)
    vant.set_sigma_(model, torch.tensor([0.1, 0.2]))
    out = model(torch.randn(2, channels, size, size))
    assert out.shape == (2, classes)
    out.sum().backward()


def test_resnet_small_input_stem_keeps_the_maxpool():
    model = vant.create_model("resnet18")
    shapes = {}
    for n in ("maxpool", "layer4"):
        getattr(model, n).register_forward_hook(lambda m, i, o, n=n: shapes.__setitem__(n, tuple(o.shape[-2:])))
    model(torch.randn(1, 3, 32, 32))
    assert shapes == {"maxpool": (16, 16), "layer4": (2, 2)}  # spec 1.3: not the kuangliu CIFAR ResNet
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1) and model.conv1.bias is not None
    assert model.layer2[0].shortcut[0].bias is None


def test_lenet_pooling_option():
    assert isinstance(vant.create_model("lenet5").pool1, nn.AvgPool2d)
    assert isinstance(vant.create_model("lenet5", pool="max").pool1, nn.MaxPool2d)
    with pytest.raises(ValueError, match="pool"):
        vant.create_model("lenet5", pool="min")


def test_torchvision_by_name():
    model = vant.create_model("tv:resnet18", num_classes=7)
    assert model.fc.out_features == 7
    with pytest.raises(ValueError, match="unknown torchvision"):
        vant.create_model("tv:resnet19")
    with pytest.raises(ValueError, match="3 input channels"):
        vant.create_model("tv:resnet18", in_channels=1)
