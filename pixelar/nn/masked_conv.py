"""Masked convolutions (van den Oord et al. 2016, section 3.4).

Features are split into colour groups, one per image channel (R, G, B for colour images):
feature f of a map with F features belongs to group ``f * num_colors // F``. A masked
kernel lets output position (r, c) see every input position earlier in raster order, all
groups; at the centre position itself, mask "A" lets group g see only groups < g (the
first layer: a pixel's channel never sees itself), mask "B" groups <= g (later layers).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F


def channel_groups(num_features: int, num_colors: int) -> torch.Tensor:
    """Colour group of each feature: (num_features,) int64 with values in [0, num_colors)."""
    if num_features < num_colors:
        raise ValueError(
            f"channel_groups: need at least one feature per colour, got "
            f"{num_features} features for {num_colors} colours"
        )
    return torch.arange(num_features) * num_colors // num_features


def causal_mask(kernel_size, mask_type: str, in_groups, out_groups) -> torch.Tensor:
    """(out, in, kh, kw) 0/1 mask: positions before the centre in raster order are open,
    the centre is open where in_group < out_group ("A") or <= ("B"), the rest closed."""
    if mask_type not in ("A", "B"):
        raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}")
    kh, kw = kernel_size
    mask = torch.zeros(len(out_groups), len(in_groups), kh, kw)
    cy, cx = kh // 2, kw // 2
    mask[:, :, :cy, :] = 1
    mask[:, :, cy, :cx] = 1
    if mask_type == "A":
        centre = out_groups[:, None] > in_groups[None, :]
    else:
        centre = out_groups[:, None] >= in_groups[None, :]
    mask[:, :, cy, cx] = centre.float()
    return mask


class MaskedConv2d(nn.Conv2d):
    """Conv2d whose kernel is masked so the output at a position depends only on inputs
    earlier in raster order (and earlier colour groups at the centre).

    x: (B, in_channels, R, W) -> (B, out_channels, R, W); odd kernel sizes, 'same' padding.
    ``in_groups`` / ``out_groups`` override the colour group of each input / output feature
    (default: ``channel_groups(features, num_colors)``).
    """

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        mask_type,
        num_colors=1,
        in_groups=None,
        out_groups=None,
        bias=True,
    ):
        kernel_size = (
            (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        )
        if any(k % 2 == 0 for k in kernel_size):
            raise ValueError(f"MaskedConv2d: kernel sizes must be odd, got {kernel_size}")
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            padding=(kernel_size[0] // 2, kernel_size[1] // 2),
            bias=bias,
        )
        in_groups = channel_groups(in_channels, num_colors) if in_groups is None else in_groups
        out_groups = channel_groups(out_channels, num_colors) if out_groups is None else out_groups
        self.mask_type = mask_type
        self.register_buffer(
            "mask", causal_mask(kernel_size, mask_type, in_groups, out_groups), persistent=False
        )
        # A mask of ones (a 1x1 mask-B kernel of one colour group) masks nothing: skip the
        # product (two ops per call and its gradient, in every residual block).
        # (A model built on the meta device, to size it, keeps the product.)
        self.mask_is_ones = not self.mask.is_meta and bool(self.mask.all())

    def masked_weight(self) -> torch.Tensor:
        """The effective kernel, weight * mask: (out_channels, in_channels, kh, kw)."""
        return self.weight if self.mask_is_ones else self.weight * self.mask

    def forward(self, x):
        if pointwise_ready(self, x):  # 1x1 on channels-last features: one matrix product
            return pointwise(x, self.masked_weight(), self.bias)
        return causal_conv2d(x, self.masked_weight(), self.bias)

    def sampling_weights(self) -> list:
        """This convolution's part of the packed layout of the cached sampler
        (``pixelar.ops.pixel_network_sample_step``), detached and contiguous:

            w (kh // 2 + 1, kw, in_channels, out_channels)  rows 0 .. kh // 2 of the masked
                kernel (the last one the centre row; the rows below are masked), [ky, kx,
                c_in, f_out]
            b (out_channels,)

        The model's 7x7 mask-A input convolution gives the op's in_w (4, 7, C, F), in_b.
        """
        return packed(self.causal_rows(), _bias(self))

    def causal_rows(self) -> torch.Tensor:
        """Rows 0 .. kh // 2 of the masked kernel as a view, [ky, kx, c_in, f_out]:
        (kh // 2 + 1, kw, in_channels, out_channels)."""
        rows = self.kernel_size[0] // 2 + 1
        return self.masked_weight()[:, :, :rows, :].permute(2, 3, 1, 0)


def causal_conv2d(x: torch.Tensor, weight: torch.Tensor, bias) -> torch.Tensor:
    """The 'same' convolution of x with a causally masked kernel: x (B, in, R, W), weight
    (out, in, kh, kw) odd sizes, masked, bias (out,) or None -> (B, out, R, W), equal to
    F.conv2d(x, weight, bias, padding=(kh // 2, kw // 2)) up to rounding.

    A one-row kernel wider than one column (a Row LSTM's 1 x k input-to-state convolution)
    is closed right of its centre by every causal mask: the input is padded on the left only
    and convolved with the kernel's columns 0 .. kw // 2 (1 x 3 -> 1 x 2, a third fewer
    products); on a contiguous CPU map, as one batched matrix product of the shifted copies
    (_row_conv_nchw). The Row LSTM 7 x 16 training step (B = 16, 2 threads), one process
    alternating the two forms, median of 16-24 rounds' minima: 1-9% faster in each of 11
    processes (e.g. 67.1 vs 69.2 ms).
    A taller kernel on a CPU map of few channels (the image, into the models' 7 x 7 mask-A
    input convolution), unless the map is channels-last, is an unfold of the rows up to the
    centre and one batched matrix product (_causal_conv2d_unfold; 2.5x faster forward +
    backward than F.conv2d's NCHW path). Other taller kernels keep the plain convolution
    (F.conv2d without the rows below the centre was no faster: 2.04 vs 2.02 ms forward +
    backward for the 7 x 7 input convolution of one channel), and so do 1 x 1 kernels on
    other devices or strided input (nothing to drop; F.pad with no padding would still
    copy x).

    A 1 x 1 kernel on a contiguous CPU map (the Row LSTM's block outputs and head) is one
    batched matrix product, weight (out, in) @ x (B, in, R * W): forward + backward of a
    16 -> 32 map at B = 16, 28 x 28, 2 threads, took 0.59 / 0.75 ms against 1.03 / 1.18 ms
    for F.conv2d (min of 40, two processes); the Row LSTM 7 x 16 training step, one process
    alternating the two, min of 16 rounds: 1-7% faster in each of 6 processes (e.g. 70.2 vs
    74.5 ms)."""
    kh, kw = weight.shape[-2:]
    cpu_nchw = x.device.type == "cpu" and x.dim() == 4 and x.is_contiguous()
    if kh == 1 and kw == 1 and cpu_nchw:
        return _pointwise_nchw(x, weight, bias)
    if kh > 1 and _unfold_ready(x):
        return _causal_conv2d_unfold(x, weight, bias)
    if kh == 1 and kw > 1:
        if cpu_nchw:
            return _row_conv_nchw(x, weight, bias)
        return F.conv2d(F.pad(x, (kw // 2, 0)), weight[..., : kw // 2 + 1], bias)
    return F.conv2d(x, weight, bias, padding=(kh // 2, kw // 2))


# Input channels up to which a tall causal kernel on a CPU map is an unfold and one batched
# matrix product (_causal_conv2d_unfold): the models' input convolution of the image.
UNFOLD_MAX_CHANNELS = 4


def _unfold_ready(x: torch.Tensor) -> bool:
    """Whether causal_conv2d takes _causal_conv2d_unfold for a tall kernel: a CPU map (B, C,
    R, W) of at most UNFOLD_MAX_CHANNELS channels, not in channels-last memory (there
    mkldnn's NHWC convolution is faster: 1.1-1.5 against 1.3-1.7 ms forward + backward for
    the 7 x 7 input convolution of the channels-last models, B = 16, 28 x 28; ad-hoc script)."""
    return (
        x.device.type == "cpu"
        and x.dim() == 4
        and x.shape[1] <= UNFOLD_MAX_CHANNELS
        and not (x.stride(1) == 1 and x.shape[1] * x.shape[2] * x.shape[3] > 1)
    )


def _causal_conv2d_unfold(x: torch.Tensor, weight: torch.Tensor, bias) -> torch.Tensor:
    """causal_conv2d of a map with few channels: x (B, C, R, W), weight (out, C, kh, kw)
    causally masked, bias (out,) or None -> (B, out, R, W) contiguous.

    Rows below the centre are closed by every causal mask, so only the kh // 2 + 1 rows up
    to the centre are unfolded (x padded above and at the sides, not below): patches (B,
    C * (kh // 2 + 1) * kw, R * W), then weight (out, C * (kh // 2 + 1) * kw) @ patches by
    one batched matrix product, as _pointwise_nchw. For the image's 7 x 7 mask-A convolution
    at B = 16 (2 threads, min of 20 calls, three rounds, one process; ad-hoc script) forward
    + backward took 1.1 against 2.7 ms for F.conv2d's NCHW mkldnn path at 1 -> 32 channels,
    28 x 28, 1.8-2.1 against 4.9-5.0 ms with a gradient for x, and 14-17 against 19-24 ms
    at 3 -> 256 channels, 32 x 32."""
    C = x.shape[1]
    kh, kw = weight.shape[-2:]
    rows = kh // 2 + 1
    patches = F.unfold(F.pad(x, (kw // 2, kw // 2, kh // 2, 0)), (rows, kw))
    w = weight[:, :, :rows, :].reshape(weight.shape[0], C * rows * kw)
    return _batched_product(w, patches, bias, x.shape)


def _row_conv_nchw(x: torch.Tensor, weight: torch.Tensor, bias) -> torch.Tensor:
    """causal_conv2d of a one-row kernel on a contiguous CPU map: x (B, C, R, W), weight
    (out, C, 1, kw) causally masked, bias (out,) or None -> (B, out, R, W) contiguous.

    The open columns 0 .. kw // 2 of the kernel read x shifted right by kw // 2 .. 0
    columns: those shifted copies, stacked along the channels (B, (kw // 2 + 1) * C, R * W),
    times the kernel's open columns (out, (kw // 2 + 1) * C), as one batched matrix product.
    The Row LSTM's 1 x 3 input-to-state convolution (32 -> 64 channels, B = 16, 28 x 28,
    2 threads; forward + backward with all gradients, min of 20 calls, 6 rounds in each of
    two processes; ad-hoc script): 3.1-3.6 against 3.6-4.3 ms for F.conv2d of the padded map
    (in 12 of 12 rounds; F.unfold in place of the stacked copies: 4.6-4.9 ms)."""
    B, C, R, W = x.shape
    cx = weight.shape[-1] // 2
    shifted = [F.pad(x, (cx - k, 0))[..., :W] if k < cx else x for k in range(cx + 1)]
    columns = torch.cat(shifted, dim=1).view(B, (cx + 1) * C, R * W)
    w = weight[:, :, 0, : cx + 1].permute(0, 2, 1).reshape(weight.shape[0], (cx + 1) * C)
    return _batched_product(w, columns, bias, x.shape)


def _pointwise_nchw(x: torch.Tensor, weight: torch.Tensor, bias) -> torch.Tensor:
    """A 1x1 convolution of a contiguous NCHW map as one batched matrix product: x (B, in,
    R, W), weight (out, in, 1, 1), bias (out,) or None -> (B, out, R, W) contiguous."""
    B, C, R, W = x.shape
    return _batched_product(weight[:, :, 0, 0], x.view(B, C, R * W), bias, x.shape)


def _batched_product(weight: torch.Tensor, columns: torch.Tensor, bias, shape) -> torch.Tensor:
    """weight (out, K) @ columns (B, K, R * W) (+ bias (out,) or None) -> (B, out, R, W),
    shape = (B, _, R, W): one bmm / baddbmm with the weight expanded over the batch (a
    view), the form that is fast on the CPU (see _pointwise_nchw's measurements in
    causal_conv2d)."""
    B, _, R, W = shape
    w = weight.expand(B, -1, -1)
    if bias is None:
        y = torch.bmm(w, columns)
    else:
        y = torch.baddbmm(bias[None, :, None].expand(B, -1, R * W), w, columns)
    return y.view(B, -1, R, W)


def conv_weight(conv: nn.Conv2d) -> torch.Tensor:
    """A Conv2d's effective kernel: the masked one for a MaskedConv2d, (out, in, kh, kw)."""
    return conv.masked_weight() if isinstance(conv, MaskedConv2d) else conv.weight


def pointwise_ready(conv: nn.Conv2d, x: torch.Tensor) -> bool:
    """Whether :func:`pointwise` computes ``conv(x)``: a 1x1 kernel, x channels-last."""
    return conv.kernel_size == (1, 1) and x.is_contiguous(memory_format=torch.channels_last)


def pointwise(x: torch.Tensor, weight: torch.Tensor, bias) -> torch.Tensor:
    """A 1x1 convolution as a matrix product: x (B, in, R, W) channels-last, weight
    (out, in, 1, 1), bias (out,) or None -> (B, out, R, W), channels-last."""
    y = F.linear(x.permute(0, 2, 3, 1), weight[:, :, 0, 0], bias)  # (B, R, W, out)
    return y.permute(0, 3, 1, 2)


def conv1x1_sampling_weights(conv: nn.Conv2d) -> list:
    """A 1x1 convolution (a Conv2d or MaskedConv2d, mask applied) as the dense product of
    the packed sampling layout: [w (in_channels, out_channels) input-major, b (out_channels,)],
    detached and contiguous."""
    if conv.kernel_size != (1, 1):
        raise ValueError(
            f"conv1x1_sampling_weights: conv must be a 1x1 convolution, got "
            f"kernel_size={tuple(conv.kernel_size)}"
        )
    return packed(conv_weight(conv)[:, :, 0, 0].t(), _bias(conv))


def _bias(conv: nn.Conv2d) -> torch.Tensor:
    """conv's bias, zeros (out_channels,) for a convolution built with bias=False."""
    bias = conv.bias
    return bias if bias is not None else conv.weight.new_zeros(conv.out_channels)


def packed(*tensors) -> list:
    """Tensors as the packed sampling layout holds them: detached, contiguous."""
    return [t.detach().contiguous() for t in tensors]
