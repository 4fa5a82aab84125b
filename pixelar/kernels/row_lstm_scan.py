"""Row LSTM scan in Triton: persistent forward and backward kernels.

Semantics and reference: ``pixelar.ops.row_lstm_scan`` / ``row_lstm_scan_ref``.

Design. One program per image runs the whole scan: a loop over the R rows. Per row, for
each block of BH hidden units, the four gate pre-activations (BH, W) are x_gates plus
the 1x3 state-to-state convolution of the previous row, done as (BH, BK) x (BK, W)
`tl.dot` products over blocks of BK input units and the three taps. The previous row's
h and c are read back from the outputs this program has just written (a `tl.debug_barrier`
between rows makes them visible to every thread of the program), so the taps at
columns c - 1 and c + 1 are just shifted loads, and the tiles stay small whatever H is:
the paper's H = 128 has 768 KB of fp32 weights, more than an SM holds, which the program
re-reads from L2 every row. Launched with num_stages=1: software pipelining would prefetch
the next row's loads ahead of the barrier.

The backward kernel runs the rows in reverse and computes only what is sequential, the
gate gradients (= grad x_gates): dL/dh of row r is the transposed convolution of row
r + 1's gate gradients, read back from grad x_gates; dL/dc is carried in a two-row scratch
buffer. The weight gradient is then one contraction of grad x_gates with the shifted saved
h, done by torch (cuBLAS on a GPU).
"""

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from ._common import (
    acc_torch_dtype,
    check_device,
    contiguous,
    dot2,
    dtype_constexprs,
    lstm_cell_bwd,
    lstm_cell_fwd,
    lstm_scan_function,
    pow2,
    scan_sizes,
    w_tile,
    w_tile_t,
)


@triton.jit
def _unit_block(hb, col, col_ok, r, H, R, W, BH: tl.constexpr):
    """Hidden units k = hb + [0, BH) at columns col of row r: k, k_ok (BH,), and valid,
    off (BH, WP): the in-range mask and the offset of (k, r, col) in one image's (H, R, W)
    map (the same offset is gate 0's in its (4H, R, W) x_gates)."""
    k = hb + tl.arange(0, BH)
    k_ok = k < H
    valid = k_ok[:, None] & col_ok[None, :]
    off = k[:, None] * (R * W) + r * W + col[None, :]
    return k, k_ok, valid, off


@triton.jit
def _conv3(
    w_ptr, q, k, k_ok, kk, kk_ok, H, h_left, h_mid, h_right, ACC: tl.constexpr, PREC: tl.constexpr
):
    """sum over taps t of w_ss[q*H + k, kk, t] @ h_t: gate q of hidden units k, (BH, WP)."""
    g = q * H + k
    out = dot2(
        w_tile(w_ptr, g, k_ok, kk, kk_ok, H, 3, 0, ACC),
        h_left,
        w_tile(w_ptr, g, k_ok, kk, kk_ok, H, 3, 1, ACC),
        h_mid,
        PREC,
    )
    return out + tl.dot(
        w_tile(w_ptr, g, k_ok, kk, kk_ok, H, 3, 2, ACC), h_right, input_precision=PREC
    )


@triton.jit
def _gates(
    x_ptr,
    w_ptr,
    h_ptr,
    x_off,
    hc_base,
    k,
    k_ok,
    col,
    col_ok,
    valid,
    r,
    H,
    R,
    W,
    BK: tl.constexpr,
    ACC: tl.constexpr,
    PREC: tl.constexpr,
):
    """Gate pre-activations (BH, WP) of hidden units k at row r, from x_gates and row r - 1
    of h (read from h_ptr; zero above row 0 and outside the row)."""
    RW = R * W
    gate = H * RW
    pre_i = tl.load(x_ptr + x_off, mask=valid, other=0.0).to(ACC)
    pre_f = tl.load(x_ptr + x_off + gate, mask=valid, other=0.0).to(ACC)
    pre_o = tl.load(x_ptr + x_off + 2 * gate, mask=valid, other=0.0).to(ACC)
    pre_g = tl.load(x_ptr + x_off + 3 * gate, mask=valid, other=0.0).to(ACC)
    for kb in range(0, H, BK):
        kk = kb + tl.arange(0, BK)
        kk_ok = kk < H
        above = kk_ok[:, None] & (r >= 1)
        hp = h_ptr + hc_base + kk[:, None] * RW + (r - 1) * W + col[None, :]
        h_mid = tl.load(hp, mask=above & col_ok[None, :], other=0.0).to(ACC)
        h_left = tl.load(hp - 1, mask=above & (col_ok & (col >= 1))[None, :], other=0.0).to(ACC)
        h_right = tl.load(hp + 1, mask=above & (col + 1 < W)[None, :], other=0.0).to(ACC)
        pre_i += _conv3(w_ptr, 0, k, k_ok, kk, kk_ok, H, h_left, h_mid, h_right, ACC, PREC)
        pre_f += _conv3(w_ptr, 1, k, k_ok, kk, kk_ok, H, h_left, h_mid, h_right, ACC, PREC)
        pre_o += _conv3(w_ptr, 2, k, k_ok, kk, kk_ok, H, h_left, h_mid, h_right, ACC, PREC)
        pre_g += _conv3(w_ptr, 3, k, k_ok, kk, kk_ok, H, h_left, h_mid, h_right, ACC, PREC)
    return pre_i, pre_f, pre_o, pre_g


@triton.jit
def _row_fwd_kernel(
    x_ptr,
    w_ptr,
    h_ptr,
    c_ptr,
    H,
    R,
    W,
    BH: tl.constexpr,
    BK: tl.constexpr,
    WP: tl.constexpr,
    ACC: tl.constexpr,
    PREC: tl.constexpr,
):
    """One program per image. x: (B, 4H, R, W); w: (4H, H, 3); h, c: (B, H, R, W)."""
    b = tl.program_id(0).to(tl.int64)
    col = tl.arange(0, WP)
    col_ok = col < W
    RW = R * W
    x_base = x_ptr + b * 4 * H * RW
    hc_base = b * H * RW
    for r in range(R):
        for hb in range(0, H, BH):
            k, k_ok, valid, off = _unit_block(hb, col, col_ok, r, H, R, W, BH)
            pre_i, pre_f, pre_o, pre_g = _gates(
                x_base,
                w_ptr,
                h_ptr,
                off,
                hc_base,
                k,
                k_ok,
                col,
                col_ok,
                valid,
                r,
                H,
                R,
                W,
                BK,
                ACC,
                PREC,
            )
            c_prev = tl.load(c_ptr + hc_base + off - W, mask=valid & (r >= 1), other=0.0).to(ACC)
            h, c = lstm_cell_fwd(pre_i, pre_f, pre_o, pre_g, c_prev)
            tl.store(h_ptr + hc_base + off, h.to(h_ptr.dtype.element_ty), mask=valid)
            tl.store(c_ptr + hc_base + off, c.to(c_ptr.dtype.element_ty), mask=valid)
        tl.debug_barrier()  # row r of h, c is read by every thread at row r + 1


@triton.jit
def _row_bwd_kernel(
    gh_ptr,
    gc_ptr,
    x_ptr,
    w_ptr,
    h_ptr,
    c_ptr,
    gx_ptr,
    dc_ptr,
    B,
    H,
    R,
    W,
    BH: tl.constexpr,
    BK: tl.constexpr,
    WP: tl.constexpr,
    ACC: tl.constexpr,
    PREC: tl.constexpr,
):
    """One program per image, rows in reverse. Writes gx = d(loss)/d(x_gates).
    dc: (2, B, H, W) scratch in ACC, dL/dc carried between rows (r % 2 is written)."""
    b = tl.program_id(0).to(tl.int64)
    col = tl.arange(0, WP)
    col_ok = col < W
    RW = R * W
    gate = H * RW
    x_base = x_ptr + b * 4 * H * RW
    gx_base = gx_ptr + b * 4 * H * RW
    hc_base = b * H * RW
    for rr in range(R):
        r = R - 1 - rr
        below = r + 1 < R
        for hb in range(0, H, BH):
            k, k_ok, valid, off = _unit_block(hb, col, col_ok, r, H, R, W, BH)
            pre_i, pre_f, pre_o, pre_g = _gates(
                x_base,
                w_ptr,
                h_ptr,
                off,
                hc_base,
                k,
                k_ok,
                col,
                col_ok,
                valid,
                r,
                H,
                R,
                W,
                BK,
                ACC,
                PREC,
            )
            # dL/dh[r, c] = sum_t W_t^T dpre[r + 1, c + 1 - t]: row r + 1 of gx, shifted.
            dh = tl.load(gh_ptr + hc_base + off, mask=valid, other=0.0).to(ACC)
            for gb in range(0, 4 * H, BK):
                g = gb + tl.arange(0, BK)
                g_ok = g < 4 * H
                rows = g_ok[:, None] & below
                gp = gx_base + g[:, None] * RW + (r + 1) * W + col[None, :]
                d_next = tl.load(gp + 1, mask=rows & (col + 1 < W)[None, :], other=0.0).to(ACC)
                d_same = tl.load(gp, mask=rows & col_ok[None, :], other=0.0).to(ACC)
                d_prev = tl.load(gp - 1, mask=rows & (col_ok & (col >= 1))[None, :], other=0.0).to(
                    ACC
                )
                dh += dot2(
                    w_tile_t(w_ptr, k, k_ok, g, g_ok, H, 3, 0, ACC),
                    d_next,
                    w_tile_t(w_ptr, k, k_ok, g, g_ok, H, 3, 1, ACC),
                    d_same,
                    PREC,
                )
                dh += tl.dot(
                    w_tile_t(w_ptr, k, k_ok, g, g_ok, H, 3, 2, ACC), d_prev, input_precision=PREC
                )
            dc_off = (b * H + k[:, None]) * W + col[None, :]
            dc = tl.load(gc_ptr + hc_base + off, mask=valid, other=0.0).to(ACC) + tl.load(
                dc_ptr + ((r + 1) % 2) * B * H * W + dc_off, mask=valid & below, other=0.0
            )
            c_prev = tl.load(c_ptr + hc_base + off - W, mask=valid & (r >= 1), other=0.0).to(ACC)
            c_cur = tl.load(c_ptr + hc_base + off, mask=valid, other=0.0).to(ACC)
            d_i, d_f, d_o, d_g, dc_prev = lstm_cell_bwd(
                pre_i, pre_f, pre_o, pre_g, c_prev, c_cur, dh, dc
            )
            ty = gx_ptr.dtype.element_ty
            tl.store(gx_base + off, d_i.to(ty), mask=valid)
            tl.store(gx_base + off + gate, d_f.to(ty), mask=valid)
            tl.store(gx_base + off + 2 * gate, d_o.to(ty), mask=valid)
            tl.store(gx_base + off + 3 * gate, d_g.to(ty), mask=valid)
            tl.store(dc_ptr + (r % 2) * B * H * W + dc_off, dc_prev, mask=valid)
        tl.debug_barrier()  # row r of gx and dc is read by every thread at row r - 1


def _fwd(x_gates, w_ss, block=16):
    """x_gates: (B, 4H, R, W), w_ss: (4H, H, 3) -> h, c: (B, H, R, W)."""
    x_gates, w_ss = contiguous(x_gates, w_ss)
    B, H, R, W, BH = scan_sizes(x_gates, block)
    h = x_gates.new_empty(B, H, R, W)
    c = x_gates.new_empty(B, H, R, W)
    _row_fwd_kernel[(B,)](
        x_gates,
        w_ss,
        h,
        c,
        H,
        R,
        W,
        BH=BH,
        BK=BH,
        WP=pow2(W),
        **dtype_constexprs(x_gates.dtype),
        num_warps=4,
        num_stages=1,
    )
    return h, c


def _bwd(grad_h, grad_c, x_gates, w_ss, h, c, block=16):
    """Gradients (grad_x_gates: (B, 4H, R, W), grad_w_ss: (4H, H, 3))."""
    grad_h, grad_c, x_gates, w_ss, h, c = contiguous(grad_h, grad_c, x_gates, w_ss, h, c)
    B, H, R, W, BH = scan_sizes(x_gates, block)
    grad_x = torch.empty_like(x_gates)
    dc = x_gates.new_empty(2, B, H, W, dtype=acc_torch_dtype(x_gates.dtype))
    _row_bwd_kernel[(B,)](
        grad_h,
        grad_c,
        x_gates,
        w_ss,
        h,
        c,
        grad_x,
        dc,
        B,
        H,
        R,
        W,
        BH=BH,
        BK=BH,
        WP=pow2(W),
        **dtype_constexprs(x_gates.dtype),
        num_warps=4,
        num_stages=1,
    )
    # Tap t at (r, c) saw h[r - 1, c + t - 1] (zero-padded).
    h_prev = F.pad(h, (1, 1, 1, 0))[:, :, :R, :]  # (B, H, R, W + 2)
    grad_w = torch.stack(
        [torch.einsum("bgrc,bkrc->gk", grad_x, h_prev[..., t : t + W]) for t in range(3)], dim=-1
    )
    return grad_x, grad_w


_RowLSTMScan = lstm_scan_function("_RowLSTMScan", _fwd, _bwd)


def row_lstm_scan_triton(x_gates: torch.Tensor, w_ss: torch.Tensor):
    """Row LSTM scan (Triton; differentiable).

    Args:
        x_gates: (B, 4H, R, W)  gate pre-activations [i, f, o, g]
        w_ss:    (4H, H, 3)     state-to-state 1 x 3 kernel over columns c-1, c, c+1 of
                                the row above
    Returns:
        (h, c), each (B, H, R, W), in x_gates' dtype (computed in float32, or float64 for
        float64 inputs).
    Example:
        >>> h, c = row_lstm_scan_triton(torch.randn(16, 512, 32, 32, device="cuda"),
        ...                             torch.randn(512, 128, 3, device="cuda"))
    """
    check_device("row_lstm_scan", x_gates, w_ss)
    return _RowLSTMScan.apply(x_gates, w_ss)
