"""PixelCNN and PixelRNN (van den Oord et al. 2016): a 7x7 mask-A convolution, a stack of
residual blocks (masked convolutions, Row LSTMs or Diagonal BiLSTMs), and an output head
of two ReLU + 1x1 mask-B convolutions; Bernoulli outputs for levels=2, a levels-way
softmax per channel otherwise, R -> G -> B masking for 3-channel images."""

import torch
import torch.nn as nn

from .. import ops
from ..nn import ConvResidualBlock, LSTMResidualBlock, MaskedConv2d, OutputHead
from .base import (
    AutoregressiveModel,
    check_image_shape,
    check_levels,
    check_model_size,
    check_positive_int,
)


def _check_args(cls_name, image_shape, levels, num_layers, hidden, head_hidden):
    """Check the constructor's arguments, and the memory they ask for, before any layer is
    built; returns C."""
    for name, v in (("num_layers", num_layers), ("hidden", hidden), ("head_hidden", head_hidden)):
        check_positive_int(name, v)
    C = check_image_shape(image_shape)[0]
    levels = check_levels(levels)
    O = 1 if levels == 2 else levels
    # a lower bound: the input convolution, 4 hidden^2 per block, the head
    params = (
        98 * C * hidden
        + 4 * num_layers * hidden**2
        + 2 * hidden * head_hidden
        + head_hidden * C * O
    )
    check_model_size(
        cls_name,
        4 * params,
        f"num_layers={num_layers}, hidden={hidden}, head_hidden={head_hidden}, levels={levels}",
    )
    return C


class _PixelNetwork(AutoregressiveModel):
    """Shared trunk: input conv (mask A) -> residual blocks -> output head."""

    def __init__(self, image_shape, levels, hidden, head_hidden, blocks):
        super().__init__(image_shape, levels)
        C = self.image_shape[0]
        if 2 * hidden < C or head_hidden < C:
            raise ValueError(
                f"hidden and head_hidden must give each of the {C} colour "
                f"channels a feature, got hidden={hidden}, head_hidden={head_hidden}"
            )
        self.input_conv = MaskedConv2d(C, 2 * hidden, 7, "A", C)
        self.blocks = nn.ModuleList(blocks)
        self.head = OutputHead(2 * hidden, head_hidden, C, 1 if self.bernoulli else levels)

    # Features in channels-last memory: set by models whose blocks are fastest so (every
    # 1x1 convolution becomes one matrix product, pixelar.nn.masked_conv.pointwise; the
    # Diagonal BiLSTM's scan reads and writes a pixel's channels as one run; mkldnn's 3x3
    # convolutions run on NHWC maps).
    channels_last = False

    def stem(self, x):
        """Integer images (B, C, H, W) -> (the float image the blocks read, (B, C, H, W);
        the input convolution's features, (B, 2h, H, W))."""
        image = self.to_input(x)
        if self.channels_last:  # channels-last strides even for C = 1, so cat keeps them
            B, C, H, W = image.shape
            image = image.new_empty(B, H, W, C).permute(0, 3, 1, 2).copy_(image)
            return image, self.input_conv(image).contiguous(memory_format=torch.channels_last)
        return image, self.input_conv(image)

    def trunk(self, x):
        """Integer images (B, C, H, W) -> (B, 2h, H, W) features before the head."""
        image, y = self.stem(x)
        for block in self.blocks:
            y = block(y, image)
        return y

    def forward(self, x):
        """x: (B, C, H, W) integers in [0, levels) -> logits (see the class docstring)."""
        out = self.head(self.trunk(self.check_images(x)))
        if self.bernoulli:
            return out
        B, _, H, W = out.shape
        C, L = self.image_shape[0], self.levels
        if out.is_contiguous():
            return out.view(B, C, L, H, W).permute(0, 1, 3, 4, 2)
        # channels-last (the Diagonal BiLSTM's features): (B, H, W, C * L) in memory
        return out.permute(0, 2, 3, 1).reshape(B, H, W, C, L).permute(0, 3, 1, 2, 4)

    def features(self, x):
        """Representation: the last block's features, averaged over positions:
        (B, C, H, W) -> (B, 2h)."""
        x = self.check_images(x)
        return self.trunk(x).mean(dim=(2, 3))

    # ------------------------------------------------------------------------------------
    # Cached sampling: pixelar.ops.pixel_network_sample_step over weights that each layer
    # packs itself (the layout is the op's docstring).

    @property
    def sampling_kind(self) -> str:
        """The op's ``layer``: "conv" (PixelCNN), "row" or "diagonal" (PixelRNN)."""
        kinds = {block.sampling_kind for block in self.blocks}
        if len(kinds) != 1:
            raise ValueError(
                f"{type(self).__name__}: the cached sampler needs blocks of one "
                f"kind, got {sorted(kinds)}"
            )
        return kinds.pop()

    def sampling_weights(self) -> list:
        """The model's weights in the packed layout of ``pixel_network_sample_step``
        (detached, contiguous, the model's dtype and device), assembled from its layers:
        the input convolution's in_w (4, 7, C, F), in_b (F,); each block's
        ``sampling_weights()``; the head's head_w1, head_b1, head_w2, head_b2."""
        weights = self.input_conv.sampling_weights()
        for block in self.blocks:
            weights += block.sampling_weights()
        return weights + self.head.sampling_weights()

    def sampling_state(self, weights, batch: int) -> list:
        """Zero cache for ``batch`` images (``ops.pixel_network_sample_state``)."""
        return ops.pixel_network_sample_state(self.sampling_kind, weights, batch, self.image_shape)

    @torch.no_grad()
    def _sample_fast(self, u, cond, progress=False):
        """Cached sampler: every layer at every position computed once per channel, from
        cached states of the rows above and the pixels to the left, by
        ``ops.pixel_network_sample_step`` (the whole image in one call, or row by row with a
        progress bar). u: (n, C, H, W) float64 uniforms, cond: (n, C, H, W) int64 or None
        (negative: sample) -> (n, C, H, W) int64."""
        layer, weights = self.sampling_kind, self.sampling_weights()
        n, C, H, W = u.shape
        x = torch.zeros(u.shape, dtype=torch.long, device=u.device)
        if cond is not None:
            x = torch.where(cond >= 0, cond, x).contiguous()
        state = self.sampling_state(weights, n)
        if not progress:
            ops.pixel_network_sample_step(x, state, u, cond, weights, layer, self.levels, 0, H * W)
            return x
        from tqdm.auto import tqdm

        with tqdm(total=u[0].numel(), desc="fast sampling", unit="dim") as bar:
            for r in range(H):
                ops.pixel_network_sample_step(
                    x, state, u, cond, weights, layer, self.levels, r * W, (r + 1) * W
                )
                bar.update(C * W)
        return x


class PixelCNN(_PixelNetwork):
    """PixelCNN: 7x7 mask A, then ``num_layers`` residual blocks with 3x3 mask-B convolutions.

    forward(x: (B, C, H, W)) -> (B, C, H, W) Bernoulli logits (levels=2) or
    (B, C, H, W, levels) logits.
    """

    channels_last = True  # 1x1 convolutions as matrix products, 3x3 ones on NHWC maps

    def __init__(self, image_shape=(1, 28, 28), levels=2, num_layers=15, hidden=16, head_hidden=32):
        C = _check_args("PixelCNN", image_shape, levels, num_layers, hidden, head_hidden)
        super().__init__(
            image_shape,
            levels,
            hidden,
            head_hidden,
            [ConvResidualBlock(hidden, C) for _ in range(num_layers)],
        )
        self._config = dict(
            image_shape=list(self.image_shape),
            levels=levels,
            num_layers=num_layers,
            hidden=hidden,
            head_hidden=head_hidden,
        )


class PixelRNN(_PixelNetwork):
    """PixelRNN: 7x7 mask A, then ``num_layers`` residual blocks, each a Row LSTM
    (``layer="row"``) or Diagonal BiLSTM (``layer="diagonal"``) of ``hidden`` units.

    The paper's configurations: binarized 28x28 with layer="diagonal", num_layers=7,
    hidden=16; 32x32x3 with num_layers=12, hidden=128, levels=256, head_hidden=1024.
    forward(x: (B, C, H, W)) -> (B, C, H, W) Bernoulli logits (levels=2) or
    (B, C, H, W, levels) logits.
    """

    def __init__(
        self,
        image_shape=(1, 28, 28),
        levels=2,
        layer="diagonal",
        num_layers=7,
        hidden=16,
        head_hidden=32,
    ):
        if layer not in ("row", "diagonal"):
            raise ValueError(f"layer must be 'row' or 'diagonal', got {layer!r}")
        C = _check_args("PixelRNN", image_shape, levels, num_layers, hidden, head_hidden)
        super().__init__(
            image_shape,
            levels,
            hidden,
            head_hidden,
            [LSTMResidualBlock(layer, hidden, C) for _ in range(num_layers)],
        )
        self.layer = layer
        self.channels_last = layer == "diagonal"
        self._config = dict(
            image_shape=list(self.image_shape),
            levels=levels,
            layer=layer,
            num_layers=num_layers,
            hidden=hidden,
            head_hidden=head_hidden,
        )

    def features(self, x):
        """Representation: the last recurrent layer's hidden state averaged over positions:
        (B, C, H, W) -> (B, hidden)."""
        x = self.check_images(x)
        image, y = self.stem(x)
        for block in self.blocks[:-1]:
            y = block(y, image)
        return self.blocks[-1].features(y, image).mean(dim=(2, 3))
