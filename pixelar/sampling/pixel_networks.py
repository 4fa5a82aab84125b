"""Cached sampler of PixelCNN and PixelRNN (Row LSTM, Diagonal BiLSTM): packs the model's
weights once per call in the layout of ``pixelar.ops.pixel_network_sample_step`` and runs
that op over the whole image (one call), or row by row when a progress bar is asked for."""
import torch

from .. import ops
from ..nn import ConvResidualBlock, LSTMResidualBlock, RowLSTM


def _masked(conv):
    """The effective kernel of a (Masked)Conv2d: weight * mask, (out, in, kh, kw)."""
    mask = getattr(conv, "mask", None)
    return conv.weight if mask is None else conv.weight * mask


def _matrix(conv):
    """1x1 convolution -> (in, out) matrix and bias."""
    return _masked(conv)[:, :, 0, 0].t(), conv.bias


def layer_kind(model) -> str:
    """"conv", "row" or "diagonal": the block type of a PixelCNN / PixelRNN."""
    block = model.blocks[0]
    if isinstance(block, ConvResidualBlock):
        return "conv"
    if isinstance(block, LSTMResidualBlock):
        return "row" if isinstance(block.lstm, RowLSTM) else "diagonal"
    raise TypeError(f"unknown block type {type(block).__name__}")


@torch.no_grad()
def pack_pixel_network(model):
    """(layer, weights): the model's parameters in the packed layout of
    ``pixel_network_sample_step`` (masks applied, matrices input-major, contiguous)."""
    layer = layer_kind(model)
    weights = [_masked(model.input_conv)[:, :, :4, :].permute(2, 3, 1, 0),
               model.input_conv.bias]
    for block in model.blocks:
        if layer == "conv":
            red_w, red_b = _matrix(block.reduce)
            exp_w, exp_b = _matrix(block.expand)
            conv_w = _masked(block.conv)[:, :, :2, :].permute(2, 3, 1, 0)
            weights += [red_w, red_b, conv_w, block.conv.bias, exp_w, exp_b]
            continue
        out_w, out_b = _matrix(block.output)
        if layer == "row":
            lstm = block.lstm
            is_w = _masked(lstm.input_to_state)[:, :, 0, :2].permute(2, 1, 0)
            weights += [is_w, lstm.input_to_state.bias, lstm.w_ss.permute(2, 1, 0),
                        out_w, out_b]
        else:
            l2r, r2l = block.lstm.left_to_right, block.lstm.right_to_left
            l2r_w, l2r_b = _matrix(l2r.input_to_state)
            r2l_w, r2l_b = _matrix(r2l.input_to_state)
            weights += [l2r_w, l2r_b, l2r.w_ss.permute(2, 1, 0), r2l_w, r2l_b,
                        r2l.w_ss.permute(2, 1, 0), out_w, out_b]
    w1, b1 = _matrix(model.head.hidden)
    w2, b2 = _matrix(model.head.out)
    weights += [w1, b1, w2, b2]
    return layer, [w.detach().contiguous() for w in weights]


@torch.no_grad()
def sample_pixel_network(model, u, cond=None, progress=False):
    """Cached sampling of a PixelCNN / PixelRNN from uniforms u: (n, C, H, W) float64, with
    an optional condition (n, C, H, W) int64 (negative: sample) -> (n, C, H, W) int64."""
    layer, weights = pack_pixel_network(model)
    n, C, H, W = u.shape
    x = torch.zeros(u.shape, dtype=torch.long, device=u.device)
    if cond is not None:
        x = torch.where(cond >= 0, cond, x).contiguous()
    state = ops.pixel_network_sample_state(layer, weights, n, (C, H, W))
    if not progress:
        ops.pixel_network_sample_step(x, state, u, cond, weights, layer, model.levels, 0, H * W)
        return x
    from tqdm.auto import tqdm
    with tqdm(total=u[0].numel(), desc="fast sampling", unit="dim") as bar:
        for r in range(H):
            ops.pixel_network_sample_step(x, state, u, cond, weights, layer, model.levels,
                                          r * W, (r + 1) * W)
            bar.update(C * W)
    return x
