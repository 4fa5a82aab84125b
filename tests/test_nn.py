"""Layers: masks, colour groups, shapes, the paper's configurations, and each layer's part
of the cached sampler's packed weights."""

import pytest
import torch

import pixelar
from pixelar.nn import (
    ConvResidualBlock,
    DiagonalBiLSTM,
    LSTMResidualBlock,
    MaskedConv2d,
    OutputHead,
    RowLSTM,
    causal_mask,
    channel_groups,
    shift_down,
)
from pixelar.nn.masked_conv import UNFOLD_MAX_CHANNELS, _unfold_ready


def test_channel_groups_split_features_evenly_in_order():
    assert channel_groups(6, 3).tolist() == [0, 0, 1, 1, 2, 2]
    assert channel_groups(16, 3).tolist() == [0] * 6 + [1] * 5 + [2] * 5
    assert channel_groups(5, 1).tolist() == [0] * 5


def test_mask_a_and_b_at_the_centre():
    groups = torch.arange(3)
    a = causal_mask((3, 3), "A", groups, groups)
    b = causal_mask((3, 3), "B", groups, groups)
    # before the centre: open for every pair of groups; after: closed
    assert a[:, :, 0, :].eq(1).all() and a[:, :, 1, 0].eq(1).all()
    assert a[:, :, 1, 2].eq(0).all() and a[:, :, 2, :].eq(0).all()
    # centre: A strictly lower (out group > in group), B lower or equal
    assert a[:, :, 1, 1].tolist() == [[0, 0, 0], [1, 0, 0], [1, 1, 0]]
    assert b[:, :, 1, 1].tolist() == [[1, 0, 0], [1, 1, 0], [1, 1, 1]]
    assert torch.equal(
        a[:, :, :, :],
        b[:, :, :, :]
        * (1 - torch.eye(3)[:, :, None, None] * torch.tensor([[0, 0, 0], [0, 1, 0], [0, 0, 0]])),
    )


def test_masked_conv_output_ignores_future_inputs():
    torch.manual_seed(0)
    conv = MaskedConv2d(1, 4, 5, "A").double()
    x = torch.randn(1, 1, 6, 7, dtype=torch.float64, requires_grad=True)
    conv(x)[0, :, 3, 4].sum().backward()
    g = x.grad[0, 0]
    assert g[3, 4:].abs().max() == 0 and g[4:].abs().max() == 0
    assert g[3, 2:4].abs().min() > 0 and g[1:3, 2:7].abs().min() > 0


def check_against_full_kernel(conv, x):
    """conv(x) and its gradients (x, weight, bias) equal F.conv2d's with the whole masked
    kernel, fp64 to 1e-12. Returns (y, the gradients of conv(x))."""
    y = conv(x)
    kh, kw = conv.kernel_size
    ref = torch.nn.functional.conv2d(
        x, conv.weight * conv.mask, conv.bias, padding=(kh // 2, kw // 2)
    )
    assert y.shape == ref.shape
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(y)
    params = (x, conv.weight) + ((conv.bias,) if conv.bias is not None else ())
    got = torch.autograd.grad(y, params, g)
    for a, b in zip(got, torch.autograd.grad(ref, params, g)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    return y, got


@pytest.mark.parametrize("kernel_size", [(1, 1), (1, 3), (1, 5), (3, 3), (7, 7)])
@pytest.mark.parametrize("mask_type", ["A", "B"])
@pytest.mark.parametrize("colours", [1, 3])
@pytest.mark.parametrize("layout", ["contiguous", "strided"])
@pytest.mark.parametrize("bias", [True, False])
def test_masked_conv_equals_the_full_kernel_convolution(
    kernel_size, mask_type, colours, layout, bias
):
    """MaskedConv2d's forward (causal_conv2d: a one-row kernel without its closed columns
    right of the centre; a 1x1 kernel on a contiguous map as a batched matrix product)
    equals the 'same' convolution with the whole masked kernel, values and all gradients,
    fp64, odd non-square maps, contiguous and strided (non-contiguous) input, with and
    without bias."""
    torch.manual_seed(0)
    conv = MaskedConv2d(3 * colours, 4 * colours, kernel_size, mask_type, colours, bias=bias)
    conv = conv.double()
    x = torch.randn(2, 3 * colours, 5, 11, dtype=torch.float64)
    x = (x[..., ::2] if layout == "strided" else x[..., :6].contiguous()).requires_grad_()
    assert x.is_contiguous() == (layout == "contiguous")
    y, got = check_against_full_kernel(conv, x)
    assert y.is_contiguous()
    assert torch.equal(got[1] * (1 - conv.mask), torch.zeros_like(got[1]))


@pytest.mark.parametrize("kernel_size", [(3, 3), (5, 3), (7, 7)])
@pytest.mark.parametrize("mask_type", ["A", "B"])
@pytest.mark.parametrize("channels", [1, 3, 4, 5])
@pytest.mark.parametrize("layout", ["contiguous", "strided", "channels_last"])
@pytest.mark.parametrize("bias", [True, False])
def test_tall_masked_conv_of_few_channels(kernel_size, mask_type, channels, layout, bias):
    """A tall causal kernel on a map of at most UNFOLD_MAX_CHANNELS channels, not
    channels-last, runs as an unfold and a batched product (_causal_conv2d_unfold); other
    maps keep F.conv2d. Either way: the 'same' convolution with the whole masked kernel,
    values and all gradients, fp64, odd non-square maps."""
    torch.manual_seed(0)
    colours = 3 if channels == 3 else 1
    conv = MaskedConv2d(channels, 6, kernel_size, mask_type, colours, bias=bias).double()
    x = torch.randn(3, channels, 7, 18, dtype=torch.float64)
    if layout == "strided":
        x = x[..., ::2]
    elif layout == "channels_last":
        x = x[..., :9].contiguous(memory_format=torch.channels_last)
    else:
        x = x[..., :9].contiguous()
    x.requires_grad_()
    unfolds = channels <= UNFOLD_MAX_CHANNELS and layout != "channels_last"
    assert _unfold_ready(x) == unfolds
    y, _ = check_against_full_kernel(conv, x)
    if unfolds:
        assert y.is_contiguous()


def test_shift_down():
    x = torch.arange(6.0).reshape(1, 2, 3)
    assert shift_down(x).tolist() == [[[0, 0, 0], [0, 1, 2]]]


def test_paper_configurations_build_and_run():
    mnist = pixelar.models.PixelRNN(
        image_shape=(1, 28, 28), levels=2, layer="diagonal", num_layers=7, hidden=16
    )
    x = torch.randint(0, 2, (1, 1, 28, 28))
    with pixelar.ops.backend("reference"):
        assert mnist(x).shape == (1, 1, 28, 28)
        assert mnist.log_prob(x).shape == (1,)
    cifar = pixelar.models.PixelRNN(
        image_shape=(3, 32, 32),
        levels=256,
        layer="diagonal",
        num_layers=12,
        hidden=128,
        head_hidden=1024,
    )
    assert len(cifar.blocks) == 12 and cifar.blocks[0].lstm.hidden == 128
    assert cifar.head.out.out_channels == 3 * 256
    cnn = pixelar.models.PixelCNN(image_shape=(1, 28, 28), num_layers=15, hidden=16)
    assert len(cnn.blocks) == 15 and cnn.input_conv.mask_type == "A"


def test_bits_per_dim():
    lp = torch.tensor([-784 * 0.6931471805599453])
    assert torch.allclose(pixelar.bits_per_dim(lp, 784), torch.tensor([1.0]))


def _shapes(tensors):
    assert all(t.is_contiguous() and not t.requires_grad for t in tensors)
    return [tuple(t.shape) for t in tensors]


def test_each_layer_packs_its_sampling_weights_in_the_op_layout():
    """Shapes of pixelar.ops.pixel_network_sample_step's docstring; F = 2h = 8, h = hd = 4,
    C = 3 colours, q = 5 head units, O = 7 levels."""
    F, h, C, q, O = 8, 4, 3, 5, 7
    assert _shapes(MaskedConv2d(C, F, 7, "A", C).sampling_weights()) == [(4, 7, C, F), (F,)]
    assert ConvResidualBlock(h, C).sampling_kind == "conv"
    assert _shapes(ConvResidualBlock(h, C).sampling_weights()) == [
        (F, h),
        (h,),
        (2, 3, h, h),
        (h,),
        (h, F),
        (F,),
    ]
    row = LSTMResidualBlock("row", h, C)
    assert row.sampling_kind == "row"
    assert _shapes(row.sampling_weights()) == [(2, F, 4 * h), (4 * h,), (3, h, 4 * h), (h, F), (F,)]
    diagonal = LSTMResidualBlock("diagonal", h, C)
    assert diagonal.sampling_kind == "diagonal"
    assert _shapes(diagonal.sampling_weights()) == [
        (F, 4 * h),
        (4 * h,),
        (2, h, 4 * h),
        (F + C, 4 * h),
        (4 * h,),
        (2, h, 4 * h),
        (h, F),
        (F,),
    ]
    assert _shapes(OutputHead(F, q, C, O).sampling_weights()) == [
        (F, q),
        (q,),
        (q, C * O),
        (C * O,),
    ]


def test_sampling_weights_apply_the_masks():
    """The packed kernels are weight * mask: the centre of a mask-A kernel is closed for a
    colour's own group and later ones, the input-to-state kernels of the LSTMs likewise."""
    conv = MaskedConv2d(3, 6, 7, "A", 3)
    with torch.no_grad():
        conv.weight.fill_(1.0)
    in_w, _ = conv.sampling_weights()
    assert torch.equal(in_w, conv.masked_weight()[:, :, :4, :].permute(2, 3, 1, 0))
    # centre (row 3, column 3): output group g sees input groups < g only
    assert (
        in_w[3, 3].tolist()
        == causal_mask((7, 7), "A", channel_groups(3, 3), channel_groups(6, 3))[:, :, 3, 3]
        .t()
        .tolist()
    )
    assert in_w[3, 4:].abs().sum() == 0  # right of the centre: closed
    lstm = RowLSTM(6, 3, num_colors=3)
    with torch.no_grad():
        lstm.input_to_state.weight.fill_(1.0)
    is_w = lstm.sampling_weights()[0]  # (2, 6, 12): columns c-1, c
    assert is_w[0].abs().min() == 1  # left column: open
    centre = channel_groups(6, 3)[:, None] <= channel_groups(3, 3).repeat(4)[None, :]
    assert torch.equal(is_w[1] != 0, centre)  # mask B at the centre


def test_row_lstm_sampling_weights_need_the_width_the_op_reads():
    """A Row LSTM with a 1x5 input-to-state kernel would be packed wrong (the op reads
    columns c-1 and c only): it refuses, saying why."""
    RowLSTM(4, 2, kernel_size=3).sampling_weights()
    with pytest.raises(ValueError, match=r"width 3.*1 x 5.*fast=False"):
        RowLSTM(4, 2, kernel_size=5).sampling_weights()


def test_sampling_weights_of_a_convolution_without_bias():
    conv = MaskedConv2d(2, 4, 3, "B", bias=False)
    w, b = conv.sampling_weights()
    assert w.shape == (2, 3, 2, 4) and torch.equal(b, torch.zeros(4))
    assert DiagonalBiLSTM(4, 2, context_channels=1).sampling_kind == "diagonal"


def test_model_assembles_its_sampler_from_its_layers():
    model = pixelar.models.PixelRNN(
        image_shape=(1, 3, 4), levels=3, layer="row", num_layers=2, hidden=3, head_hidden=4
    )
    weights = model.sampling_weights()
    parts = [
        model.input_conv.sampling_weights(),
        *[b.sampling_weights() for b in model.blocks],
        model.head.sampling_weights(),
    ]
    assert model.sampling_kind == "row"
    assert len(weights) == sum(map(len, parts)) == 2 + 2 * 5 + 4
    assert all(torch.equal(a, b) for a, b in zip(weights, [t for p in parts for t in p]))
    model.blocks[1] = ConvResidualBlock(3)
    with pytest.raises(ValueError, match="one kind"):
        model.sampling_kind


def test_masked_weight_skips_a_mask_of_ones():
    """A 1x1 mask-B kernel of one colour group masks nothing: masked_weight() is the weight
    itself (no product); every other mask still applies."""
    from pixelar.nn import MaskedConv2d

    ones = MaskedConv2d(4, 6, 1, "B")
    assert ones.mask_is_ones and ones.masked_weight() is ones.weight
    for conv in (
        MaskedConv2d(4, 6, 1, "A"),
        MaskedConv2d(4, 6, 3, "B"),
        MaskedConv2d(6, 6, 1, "B", num_colors=3),
    ):
        assert not conv.mask_is_ones
        torch.testing.assert_close(conv.masked_weight(), conv.weight * conv.mask)
    with torch.device("meta"):
        assert not MaskedConv2d(4, 6, 1, "B").mask_is_ones  # sized on meta: keeps the product
