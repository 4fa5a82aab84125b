"""Layers: masks, colour groups, shapes, and the paper's configurations."""
import torch

import pixelar
from pixelar.nn import MaskedConv2d, causal_mask, channel_groups, shift_down


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
    assert torch.equal(a[:, :, :, :], b[:, :, :, :] * (1 - torch.eye(3)[:, :, None, None]
                                                        * torch.tensor([[0, 0, 0], [0, 1, 0], [0, 0, 0]])))


def test_masked_conv_output_ignores_future_inputs():
    torch.manual_seed(0)
    conv = MaskedConv2d(1, 4, 5, "A").double()
    x = torch.randn(1, 1, 6, 7, dtype=torch.float64, requires_grad=True)
    conv(x)[0, :, 3, 4].sum().backward()
    g = x.grad[0, 0]
    assert g[3, 4:].abs().max() == 0 and g[4:].abs().max() == 0
    assert g[3, 2:4].abs().min() > 0 and g[1:3, 2:7].abs().min() > 0


def test_shift_down():
    x = torch.arange(6.0).reshape(1, 2, 3)
    assert shift_down(x).tolist() == [[[0, 0, 0], [0, 1, 2]]]


def test_paper_configurations_build_and_run():
    mnist = pixelar.models.PixelRNN(image_shape=(1, 28, 28), levels=2, layer="diagonal",
                                    num_layers=7, hidden=16)
    x = torch.randint(0, 2, (1, 1, 28, 28))
    with pixelar.ops.backend("reference"):
        assert mnist(x).shape == (1, 1, 28, 28)
        assert mnist.log_prob(x).shape == (1,)
    cifar = pixelar.models.PixelRNN(image_shape=(3, 32, 32), levels=256, layer="diagonal",
                                    num_layers=12, hidden=128, head_hidden=1024)
    assert len(cifar.blocks) == 12 and cifar.blocks[0].lstm.hidden == 128
    assert cifar.head.out.out_channels == 3 * 256
    cnn = pixelar.models.PixelCNN(image_shape=(1, 28, 28), num_layers=15, hidden=16)
    assert len(cnn.blocks) == 15 and cnn.input_conv.mask_type == "A"


def test_bits_per_dim():
    lp = torch.tensor([-784 * 0.6931471805599453])
    assert torch.allclose(pixelar.bits_per_dim(lp, 784), torch.tensor([1.0]))
