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
        raise ValueError(f"channel_groups: need at least one feature per colour, got "
                         f"{num_features} features for {num_colors} colours")
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

    def __init__(self, in_channels, out_channels, kernel_size, mask_type, num_colors=1,
                 in_groups=None, out_groups=None, bias=True):
        kernel_size = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        if any(k % 2 == 0 for k in kernel_size):
            raise ValueError(f"MaskedConv2d: kernel sizes must be odd, got {kernel_size}")
        super().__init__(in_channels, out_channels, kernel_size,
                         padding=(kernel_size[0] // 2, kernel_size[1] // 2), bias=bias)
        in_groups = channel_groups(in_channels, num_colors) if in_groups is None else in_groups
        out_groups = channel_groups(out_channels, num_colors) if out_groups is None else out_groups
        self.mask_type = mask_type
        self.register_buffer("mask", causal_mask(kernel_size, mask_type, in_groups, out_groups),
                             persistent=False)

    def forward(self, x):
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)
