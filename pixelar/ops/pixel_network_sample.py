"""Cached sampling of PixelCNN / PixelRNN: the step op that advances every layer of the
network by one pixel (or by a range of pixels, the whole image included), its reference
and dispatch.

The network (pixelar.models.PixelCNN / PixelRNN) is: a 7x7 mask-A convolution of the image
(values x / (levels - 1)), L residual blocks, and a head of two ReLU + 1x1 convolutions.
Generating pixel (r, c) needs, per layer, only states that are already known, kept in a
cache (``state``) that the op updates in place:

* ``layer="conv"`` (PixelCNN block: ReLU, 1x1, ReLU, 3x3 mask B, ReLU, 1x1, residual):
  the 3x3 convolution at (r, c) reads its input at (r-1, c-1..c+1), (r, c-1) and (r, c);
  the cache keeps that input for the previous and the current row, so every layer at every
  position is computed once.
* ``layer="row"`` (Row LSTM): (r, c) reads h at (r-1, c-1..c+1), the cell state at
  (r-1, c), and the layer input at (r, c-1) (the masked 1x3 input-to-state convolution);
  the cache keeps h and c of the previous and current row and the current row's inputs.
* ``layer="diagonal"`` (Diagonal BiLSTM): the left-to-right direction at (r, c) reads h
  at (r-1, c) and h, c at (r, c-1); the right-to-left direction, whose output is only used
  one row lower, runs over row r once its last pixel is generated (it reads the row's
  layer inputs and the image row, unmasked).

The channels of a pixel are generated in turn (R, G, B): the whole column of layers at
(r, c) is computed once per channel (mask A and mask B make channel ch's logits depend
only on channels < ch there), and the cache is written after the last channel.

Every value is drawn from the pre-drawn uniforms ``u`` by the rule of
pixelar/ops/draw.py (float64 inverse CDF), so this sampler and the naive one return
identical images from identical uniforms.

Kernels: C++ (csrc/cpu/pixel_network_sample.cpp: images in parallel, each running its
pixel loop) and CUDA (csrc/cuda/pixel_network_sample.cu: one thread block per image runs
the pixels [start, stop) in one launch, threads over the features of each dense product,
the same draw helpers, csrc/include/pixelar/sampling_math.h). Under backend "auto" CPU
tensors go to the C++ kernel and CUDA tensors to the CUDA kernel; a CUDA tensor with no
CUDA kernel built raises ``BackendUnavailableError`` (no silent fallback): backend
"reference" runs the PyTorch sampler below (``pixel_network_sample_step_ref``) on a GPU
when asked for.

Packed weights (``weights``, all of the model's dtype, contiguous; F = 2h features,
hd = hidden units of a recurrent layer, q = head hidden, O = 1 (Bernoulli) or levels):
    in_w (4, 7, C, F)  rows 0..3 (3 = centre) of the mask-A kernel, [ky, kx, c_in, f_out]
    in_b (F,)
    per block, "conv": red_w (F, h), red_b (h,), conv_w (2, 3, h, h) rows 0..1 of the
                       mask-B kernel, conv_b (h,), exp_w (h, F), exp_b (F,)
               "row":  is_w (2, F, 4hd) columns c-1 and c of the masked 1x3 kernel, is_b,
                       ss_w (3, hd, 4hd) columns c-1, c, c+1 of the row above, out_w (hd, F),
                       out_b (F,)
               "diagonal": l2r_w (F, 4hd), l2r_b, l2r_ss (2, hd, 4hd) [row above, left],
                       r2l_w (F + C, 4hd), r2l_b, r2l_ss (2, hd, 4hd) [row above, right],
                       out_w (hd, F), out_b (F,)
    head_w1 (F, q), head_b1 (q,), head_w2 (q, C * O), head_b2 (C * O,)
Every matrix is stored input-major ([in, out]); gates in the order [i, f, o, g].

State (``pixel_network_sample_state``), zeros at the start; B batch, L blocks:
    "conv":     act (B, L, 2, W, h)   ReLU(1x1 reduce) of the rows r % 2 and (r - 1) % 2
    "row":      h, c (B, L, 2, W, hd) of the rows r % 2 and (r - 1) % 2; y (B, L, W, F)
                the layer inputs of the current row
    "diagonal": h (B, L, W, hd) left-to-right h of the current row left of the next pixel
                and of the row above from it on; c (B, L, hd) left-to-right cell of the
                last pixel; back (B, L, W, hd) right-to-left h of the last complete row;
                y (B, L, W, F) the layer inputs of the current row
Whatever the state holds, positions outside the image (row -1, columns -1 and W) count as
zero.
"""

import torch

from .._extension import extension_loaded
from ._backend import dispatch, register
from ._checks import check_condition, check_float_tensor, check_shape, check_uniforms
from .draw import check_finite_logits, draw
from .lstm_cell import lstm_cell_ref

OP = "pixel_network_sample_step"
LAYERS = ("conv", "row", "diagonal")
BLOCK_PARAMS = {"conv": 6, "row": 5, "diagonal": 8}


def unpack_weights(weights, layer):
    """Split the packed list into (in_w, in_b, blocks, head), blocks a list of L tuples."""
    n = BLOCK_PARAMS[layer]
    body = weights[2:-4]
    if len(body) % n:
        raise ValueError(
            f"{OP}: weights must be 2 + {n} * L + 4 tensors for layer {layer!r}, got {len(weights)}"
        )
    blocks = [tuple(body[i : i + n]) for i in range(0, len(body), n)]
    return weights[0], weights[1], blocks, tuple(weights[-4:])


def state_shapes(layer, weights, batch, image_shape):
    """The shapes of the state tensors (layout in the module docstring)."""
    _, _, blocks, _ = unpack_weights(weights, layer)
    C, H, W = image_shape
    L, F = len(blocks), weights[1].shape[0]
    if layer == "conv":
        return [(batch, L, 2, W, blocks[0][0].shape[1])]
    hd = blocks[0][-2].shape[0]
    if layer == "row":
        return [(batch, L, 2, W, hd), (batch, L, 2, W, hd), (batch, L, W, F)]
    return [(batch, L, W, hd), (batch, L, hd), (batch, L, W, hd), (batch, L, W, F)]


def pixel_network_sample_state(layer, weights, batch, image_shape):
    """Zero state for ``batch`` images of ``image_shape`` (C, H, W): a list of tensors of the
    weights' dtype and device (layout in the module docstring)."""
    return [
        weights[1].new_zeros(shape) for shape in state_shapes(layer, weights, batch, image_shape)
    ]


# ----------------------------------------------------------------------------------------
# Reference: the cache updates written out in plain PyTorch, batched over images.


def _input_conv(img, in_w, in_b, r, c):
    """Mask-A 7x7 convolution at (r, c): img (B, C, H, W) floats -> (B, F)."""
    W = img.shape[3]
    y = in_b.expand(img.shape[0], -1)
    for ky in range(4):
        rr = r + ky - 3
        if rr < 0:
            continue
        for kx in range(7 if ky < 3 else 4):
            cc = c + kx - 3
            if 0 <= cc < W:
                y = y + img[:, :, rr, cc] @ in_w[ky, kx]
    return y


def _conv_block(y, p, state, l, r, c, W):
    red_w, red_b, conv_w, conv_b, exp_w, exp_b = p
    (act,) = state
    a = torch.relu(torch.relu(y) @ red_w + red_b)
    z = conv_b + a @ conv_w[1, 1]
    if r >= 1:
        for kx in range(3):
            cc = c + kx - 1
            if 0 <= cc < W:
                z = z + act[:, l, (r - 1) % 2, cc] @ conv_w[0, kx]
    if c >= 1:
        z = z + act[:, l, r % 2, c - 1] @ conv_w[1, 0]
    out = y + torch.relu(z) @ exp_w + exp_b
    return out, [(act, (slice(None), l, r % 2, c), a)]


def _row_block(y, p, state, l, r, c, W):
    is_w, is_b, ss_w, out_w, out_b = p
    hs, cs, ys = state
    pre = is_b + y @ is_w[1]
    if c >= 1:
        pre = pre + ys[:, l, c - 1] @ is_w[0]
    c_prev = torch.zeros_like(hs[:, l, 0, 0])
    if r >= 1:
        for kx in range(3):
            cc = c + kx - 1
            if 0 <= cc < W:
                pre = pre + hs[:, l, (r - 1) % 2, cc] @ ss_w[kx]
        c_prev = cs[:, l, (r - 1) % 2, c]
    h, cell = lstm_cell_ref(pre, c_prev, dim=-1)
    out = y + h @ out_w + out_b
    where = (slice(None), l, r % 2, c)
    return out, [(hs, where, h), (cs, where, cell), (ys, (slice(None), l, c), y)]


def _diagonal_block(y, p, state, l, r, c, W):
    l2r_w, l2r_b, l2r_ss, _, _, _, out_w, out_b = p
    hs, cl, back, ys = state
    pre = l2r_b + y @ l2r_w
    c_prev = torch.zeros_like(cl[:, l])
    if r >= 1:
        pre = pre + hs[:, l, c] @ l2r_ss[0]
    if c >= 1:
        pre = pre + hs[:, l, c - 1] @ l2r_ss[1]
        c_prev = cl[:, l]
    h, cell = lstm_cell_ref(pre, c_prev, dim=-1)
    features = h + back[:, l, c] if r >= 1 else h
    out = y + features @ out_w + out_b
    return out, [
        (hs, (slice(None), l, c), h),
        (cl, (slice(None), l), cell),
        (ys, (slice(None), l, c), y),
    ]


def _right_to_left_row(img, blocks, state, r):
    """Run the right-to-left direction of every layer over the complete row r."""
    _, _, back, ys = state
    W = img.shape[3]
    for l, p in enumerate(blocks):
        r2l_w, r2l_b, r2l_ss = p[3:6]
        cell = torch.zeros_like(back[:, l, 0])
        for c in range(W - 1, -1, -1):
            pre = r2l_b + torch.cat([ys[:, l, c], img[:, :, r, c]], dim=1) @ r2l_w
            if r >= 1:
                pre = pre + back[:, l, c] @ r2l_ss[0]
            if c + 1 < W:
                pre = pre + back[:, l, c + 1] @ r2l_ss[1]
            h, cell = lstm_cell_ref(pre, cell, dim=-1)
            back[:, l, c] = h


_BLOCKS = {"conv": _conv_block, "row": _row_block, "diagonal": _diagonal_block}


def pixel_network_sample_step_ref(x, state, u, cond, weights, layer, levels, start, stop):
    """Pure-PyTorch reference of :func:`pixel_network_sample_step` (same arguments and
    checks): a plain loop over the pixels, channels and layers, batched over images."""
    _check(x, state, u, cond, weights, layer, levels, start, stop)
    in_w, in_b, blocks, (w1, b1, w2, b2) = unpack_weights(weights, layer)
    B, C, H, W = x.shape
    O = w2.shape[1] // C
    dtype = in_w.dtype
    block_fn = _BLOCKS[layer]
    for p in range(start, stop):
        r, c = divmod(p, W)
        for ch in range(C):
            img = x.to(dtype) / (levels - 1)
            y = _input_conv(img, in_w, in_b, r, c)
            writes = []
            for l, params in enumerate(blocks):
                y, w = block_fn(y, params, state, l, r, c, W)
                writes += w
            hidden = torch.relu(torch.relu(y) @ w1 + b1)
            logits = hidden @ w2[:, ch * O : (ch + 1) * O] + b2[ch * O : (ch + 1) * O]
            logits = logits[:, 0] if O == 1 else logits
            check_finite_logits(
                logits, O == 1, p * C + ch, None if cond is None else cond[:, ch, r, c] < 0
            )
            value = draw(logits, u[:, ch, r, c], O == 1)
            if cond is not None:
                value = torch.where(cond[:, ch, r, c] >= 0, cond[:, ch, r, c], value)
            x[:, ch, r, c] = value
        for tensor, where, value in writes:
            tensor[where] = value
        if layer == "diagonal" and c == W - 1:
            _right_to_left_row(x.to(dtype) / (levels - 1), blocks, state, r)


# ----------------------------------------------------------------------------------------
# Wrapper


def _check(x, state, u, cond, weights, layer, levels, start, stop):
    if layer not in LAYERS:
        raise ValueError(f"{OP}: layer must be one of {LAYERS}, got {layer!r}")
    if not isinstance(x, torch.Tensor) or x.dtype != torch.int64 or x.dim() != 4:
        raise ValueError(
            f"{OP}: x must be an int64 tensor (B, C, H, W), got "
            f"{getattr(x, 'dtype', type(x).__name__)} "
            f"{tuple(getattr(x, 'shape', ()))}"
        )
    B, C, H, W = x.shape
    check_float_tensor(OP, "u", u, 4)
    check_shape(OP, "u", u, x.shape)
    if u.dtype != torch.float64:
        raise ValueError(f"{OP}: u must be float64 uniforms, got {u.dtype}")
    if cond is not None:
        if cond.dtype != torch.int64:
            raise ValueError(f"{OP}: cond must be int64, got {cond.dtype}")
        check_shape(OP, "cond", cond, x.shape)
    shapes = state_shapes(layer, weights, B, (C, H, W))
    if len(state) != len(shapes):
        raise ValueError(
            f"{OP}: state must be {len(shapes)} tensors for layer {layer!r}, got {len(state)}"
        )
    dtype = weights[0].dtype
    for i, (s, shape) in enumerate(zip(state, shapes)):
        check_shape(OP, f"state[{i}]", s, shape)
        if s.dtype != dtype or not s.is_contiguous():
            raise ValueError(
                f"{OP}: state[{i}] must be a contiguous tensor of the weights' "
                f"dtype {dtype}, got {s.dtype}" + ("" if s.is_contiguous() else " (not contiguous)")
            )
    if not x.is_contiguous():
        raise ValueError(f"{OP}: x must be contiguous (it is written in place)")
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 2:
        raise ValueError(f"{OP}: levels must be an int >= 2, got {levels!r}")
    for name, v in (("start", start), ("stop", stop)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"{OP}: {name} must be an int, got {v!r}")
    if not 0 <= start <= stop <= H * W:
        raise ValueError(
            f"{OP}: need 0 <= start <= stop <= H * W = {H * W}, got start={start}, stop={stop}"
        )
    check_uniforms(OP, "u", u)
    if cond is not None:
        check_condition(OP, "cond", cond, levels)


def pixel_network_sample_step(x, state, u, cond, weights, layer, levels, start, stop):
    """Generate pixels start .. stop-1 (raster index r * W + c) of a PixelCNN / PixelRNN in
    place, on the backend in force (see pixelar.ops). One pixel (stop = start + 1) is the
    step op; start=0, stop=H*W the whole generation loop in one call.

    x:       (B, C, H, W) int64, written in place; pixels before ``start`` must hold their
             values, the others their condition value or 0
    state:   list of cache tensors, updated in place (``pixel_network_sample_state``)
    u:       (B, C, H, W) float64 uniforms; dimension (r, c, ch) uses u[:, ch, r, c]
    cond:    (B, C, H, W) int64 or None, values < levels; entries >= 0 are kept instead
             of sampled, negative ones sampled
    weights: list of tensors, packed as in the module docstring
    layer:   "conv" (PixelCNN), "row" (Row LSTM) or "diagonal" (Diagonal BiLSTM)
    levels:  values per dimension (2: Bernoulli head, else ``levels`` logits per channel)
    Returns None. Not differentiable (sampling).
    Raises ValueError for u outside [0, 1), cond values >= levels,
    or a NaN / infinite logit at a drawn dimension (pixelar/ops/draw.py:
    NONFINITE_MESSAGE; the kernels raise it after their parallel region).
    """
    _check(x, state, u, cond, weights, layer, levels, start, stop)
    dispatch(OP, x.device)(x, state, u, cond, weights, layer, levels, start, stop)


def _compiled(x, state, u, cond, weights, layer, levels, start, stop):
    weights = [w.contiguous() for w in weights]
    torch.ops.pixelar.pixel_network_sample_step(
        x,
        state,
        u.contiguous(),
        None if cond is None else cond.contiguous(),
        weights,
        layer,
        levels,
        start,
        stop,
    )


# No Triton kernel: backend "triton" raises BackendUnavailableError for this op.
register(OP, reference=pixel_network_sample_step_ref, cpp=_compiled, cuda=_compiled)


def _register():
    if not extension_loaded() or not hasattr(torch.ops.pixelar, OP):
        return

    @torch.library.register_fake(f"pixelar::{OP}")
    def _fake(x, state, u, cond, weights, layer, levels, start, stop):
        return None


_register()
