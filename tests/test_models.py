"""The module registry: the reference USPS network exactly, the stronger CNN, the tabular MLP."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tandem import models
from tandem.models import build_module, registered_modules


def test_registry_lists_the_three_modules():
    assert {"usps_cnn", "cnn", "mlp"} <= set(registered_modules())


def test_unknown_name_lists_registered_modules():
    with pytest.raises(ValueError, match="Unknown module 'usps_cn'") as err:
        build_module("usps_cn", 256, 10)
    assert "Did you mean 'usps_cnn'" in str(err.value)
    for name in ("cnn", "mlp", "usps_cnn"):
        assert repr(name) in str(err.value)


def test_usps_cnn_is_the_skorch_usps_tutorial_network():
    net = build_module("usps_cnn", 256, 10)
    layers = list(net)
    kinds = [type(m) for m in layers]
    assert kinds == [
        models.Reshape,
        nn.Conv2d, nn.ReLU, nn.MaxPool2d,
        nn.Conv2d, nn.ReLU, nn.MaxPool2d,
        nn.Conv2d, nn.ReLU,
        nn.Flatten,
        nn.Linear, nn.ReLU, nn.Dropout,
        nn.Linear,
    ]  # fmt: skip
    assert layers[0].shape == (1, 16, 16)
    convs = [m for m in layers if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(1, 32), (32, 64), (64, 128)]
    for c in convs:
        assert c.kernel_size == (3, 3) and c.padding == (1, 1) and c.stride == (1, 1)
        assert c.bias is not None
    for pool in (m for m in layers if isinstance(m, nn.MaxPool2d)):
        assert pool.kernel_size == 2 and pool.stride == 2
    fc1, fc2 = (m for m in layers if isinstance(m, nn.Linear))
    assert (fc1.in_features, fc1.out_features) == (2048, 256)
    assert (fc2.in_features, fc2.out_features) == (256, 10)
    assert layers[12].p == 0.2
    n_params = sum(p.numel() for p in net.parameters())
    expected = (
        (1 * 9 * 32 + 32) + (32 * 9 * 64 + 64) + (64 * 9 * 128 + 128) + (2048 * 256 + 256) + 2570
    )
    assert n_params == expected


def test_usps_cnn_forward_shape_and_reshape():
    torch.manual_seed(0)
    net = build_module("usps_cnn", 256, 10).eval()
    x = torch.randn(5, 256)
    out = net(x)
    assert out.shape == (5, 10)
    # the flat row is read as one 16x16 image, row-major
    image = net[0](x)
    assert image.shape == (5, 1, 16, 16)
    assert torch.equal(image[2, 0, 3], x[2, 48:64])
    assert build_module("usps_cnn", 256, 4)(x).shape == (5, 4)


def test_cnn_output_shape_and_batch_norm():
    torch.manual_seed(0)
    net = build_module("cnn", 256, 10, channels=(8, 16), hidden=32)
    assert any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    assert net(torch.randn(4, 256)).shape == (4, 10)
    # other square sides work too (8x8 digits: 64 features)
    assert build_module("cnn", 64, 3, channels=(4, 8), hidden=8)(torch.randn(2, 64)).shape == (2, 3)
    with pytest.raises(ValueError, match="one or more positive widths"):
        build_module("cnn", 256, 10, channels=())


def test_cnn_blocks_and_global_head():
    torch.manual_seed(0)
    # the default (two blocks, dense head) is the network it always was: same layers, same init
    dense = build_module("cnn", 256, 10, channels=(8, 16), hidden=32)
    kinds = [type(m).__name__ for m in dense]
    block = ["Conv2d", "BatchNorm2d", "ReLU"] * 2
    head = ["MaxPool2d", "Flatten", "Dropout", "Linear", "ReLU", "Dropout", "Linear"]
    assert kinds == ["Reshape", *block, "MaxPool2d", *block, *head]
    assert dense[-4].in_features == 16 * 4 * 4
    # three blocks and a global head: a 16x16 image is pooled twice, the last block sees 4x4
    net = build_module("cnn", 256, 10, channels=(4, 8, 16), head="global", dropout=0.0)
    assert [type(m).__name__ for m in net][-4:] == ["AdaptiveMaxPool2d", "Flatten", "Dropout",
                                                    "Linear"]  # fmt: skip
    assert sum(isinstance(m, nn.MaxPool2d) for m in net) == 2
    assert net[-1].in_features == 16 and net(torch.randn(3, 256)).shape == (3, 10)
    # the global head keeps each channel's largest response of the last block
    trunk, x = net[:-4].eval(), torch.randn(2, 256)
    assert torch.equal(net[:-2].eval()(x), trunk(x).amax(dim=(2, 3)))
    # three dense blocks pool three times: 16x16 -> 2x2; an 8x8 image is too small for that
    assert build_module("cnn", 256, 5, channels=(4, 8, 8))(torch.randn(2, 256)).shape == (2, 5)
    assert build_module("cnn", 64, 3, channels=(4, 4, 4, 4), head="global")(
        torch.randn(2, 64)
    ).shape == (2, 3)  # three poolings: 8x8 -> 1x1
    with pytest.raises(ValueError, match=r"8x8 image is too small for 4 blocks with a dense"):
        build_module("cnn", 64, 3, channels=(4, 4, 4, 4))
    with pytest.raises(ValueError, match="Unknown cnn head 'globl'.*Did you mean 'global'"):
        build_module("cnn", 256, 10, head="globl")


@pytest.mark.parametrize("name", ["usps_cnn", "cnn"])
def test_image_modules_take_any_shape_and_refuse_what_does_not_fit(name):
    with pytest.raises(ValueError, match="250 features are not a square one-channel image"):
        build_module(name, 250, 10)
    with pytest.raises(ValueError, match=r"image_shape \[6, 8\] x 1 channel\(s\) does not hold 50"):
        build_module(name, 50, 10, image_shape=(6, 8))
    # 6x8 grey, 12x10 RGB (channel-major rows): pooling floors odd sides
    assert build_module(name, 48, 4, image_shape=(6, 8))(torch.randn(2, 48)).shape == (2, 4)
    net = build_module(name, 360, 3, image_shape=(12, 10), in_channels=3)
    assert net(torch.randn(2, 360)).shape == (2, 3)


def test_mlp_layers_activation_and_options():
    net = build_module("mlp", 7, 2, hidden_sizes=(5, 4), activation="gelu", dropout=0.5)
    kinds = [type(m) for m in net]
    assert kinds == [nn.Linear, nn.GELU, nn.Dropout, nn.Linear, nn.GELU, nn.Dropout, nn.Linear]
    linears = [m for m in net if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(7, 5), (5, 4), (4, 2)]
    bn = build_module("mlp", 7, 2, hidden_sizes=3, batch_norm=True)
    assert [type(m) for m in bn] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert build_module("mlp", 7, 1, hidden_sizes=())(torch.randn(3, 7)).shape == (3, 1)


def test_mlp_init_option():
    torch.manual_seed(0)
    default = build_module("mlp", 6, 3, hidden_sizes=(8,))
    assert any(bool((m.bias != 0).any()) for m in default if isinstance(m, nn.Linear))
    torch.manual_seed(0)
    net = build_module("mlp", 6, 3, hidden_sizes=(8,), init="orthogonal")
    for m in (m for m in net if isinstance(m, nn.Linear)):
        assert torch.count_nonzero(m.bias) == 0
        w = m.weight
        gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
        assert torch.allclose(gram, torch.eye(gram.shape[0]), atol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"activation": "relu6"}, "Unknown activation 'relu6'"),
        ({"init": "xavier"}, "Unknown init 'xavier'"),
        ({"hiden_sizes": (3,)}, "Unknown argument 'hiden_sizes'.*Did you mean 'hidden_sizes'"),
    ],
)
def test_mlp_bad_options_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_module("mlp", 4, 2, **kwargs)


def test_register_module_adds_a_name():
    @models.register_module("_test_linear")
    def linear(n_features, n_outputs):
        return nn.Linear(n_features, n_outputs)

    try:
        assert "_test_linear" in registered_modules()
        assert build_module("_test_linear", 3, 2).out_features == 2
    finally:
        models._REGISTRY.pop("_test_linear")
