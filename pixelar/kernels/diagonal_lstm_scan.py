"""Diagonal LSTM scan in Triton: persistent forward and backward kernels.

Semantics and reference: ``pixelar.ops.diagonal_lstm_scan`` / ``diagonal_lstm_scan_ref``.

Design. One program per image runs the whole scan: a loop over the S skewed columns. Per
column, for each block of BH hidden units, the four gate pre-activations (BH, R) are
x_gates plus the 2x1 state-to-state convolution of the previous column (rows r - 1 and
r), done as (BH, BK) x (BK, R) `tl.dot` products over blocks of BK input units. The
previous column's h and c are read back from the outputs this program has just written
(a `tl.debug_barrier` between columns makes them visible to every thread), so "the row
above" is a shifted load. At the paper's H = 16 one block covers everything and the 8 KB
of weights stay in L1. Launched with num_stages=1: software pipelining would prefetch the
next column's loads ahead of the barrier.

The backward kernel runs the columns in reverse and computes only what is sequential, the
gate gradients (= grad x_gates): dL/dh of column j is W1^T dpre[r] + W0^T dpre[r + 1] of
column j + 1, read back from grad x_gates; dL/dc is carried in a two-column scratch
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
def _inside(j, r, r_ok, W):
    """(RP,) rows r of skewed column j that lie in the image (image column j - r in [0, W))."""
    col = j - r
    return r_ok & (col >= 0) & (col < W)


@triton.jit
def _unit_block(hb, r, r_ok, j, H, R, S, BH: tl.constexpr):
    """Hidden units k = hb + [0, BH) at rows r of skewed column j: k, k_ok (BH,), and valid,
    off (BH, RP): the in-range mask and the offset of (k, r, j) in one image's (H, R, S) map
    (the same offset is gate 0's in its (4H, R, S) x_gates)."""
    k = hb + tl.arange(0, BH)
    k_ok = k < H
    valid = k_ok[:, None] & r_ok[None, :]
    off = k[:, None] * (R * S) + r[None, :] * S + j
    return k, k_ok, valid, off


@triton.jit
def _gates(
    x_ptr,
    w_ptr,
    h_ptr,
    x_off,
    hc_base,
    k,
    k_ok,
    r,
    r_ok,
    valid,
    j,
    H,
    R,
    S,
    BK: tl.constexpr,
    ACC: tl.constexpr,
    PREC: tl.constexpr,
):
    """Gate pre-activations (BH, RP) of hidden units k in skewed column j, from x_gates and
    column j - 1 of h (read from h_ptr; zero before column 0 and above row 0)."""
    RS = R * S
    gate = H * RS
    pre_i = tl.load(x_ptr + x_off, mask=valid, other=0.0).to(ACC)
    pre_f = tl.load(x_ptr + x_off + gate, mask=valid, other=0.0).to(ACC)
    pre_o = tl.load(x_ptr + x_off + 2 * gate, mask=valid, other=0.0).to(ACC)
    pre_g = tl.load(x_ptr + x_off + 3 * gate, mask=valid, other=0.0).to(ACC)
    for kb in range(0, H, BK):
        kk = kb + tl.arange(0, BK)
        kk_ok = kk < H
        prev = kk_ok[:, None] & r_ok[None, :] & (j >= 1)
        hp = h_ptr + hc_base + kk[:, None] * RS + r[None, :] * S + (j - 1)
        h_same = tl.load(hp, mask=prev, other=0.0).to(ACC)
        h_above = tl.load(hp - S, mask=prev & (r >= 1)[None, :], other=0.0).to(ACC)
        g = k
        pre_i += dot2(
            w_tile(w_ptr, g, k_ok, kk, kk_ok, H, 2, 0, ACC),
            h_above,
            w_tile(w_ptr, g, k_ok, kk, kk_ok, H, 2, 1, ACC),
            h_same,
            PREC,
        )
        g += H
        pre_f += dot2(
            w_tile(w_ptr, g, k_ok, kk, kk_ok, H, 2, 0, ACC),
            h_above,
            w_tile(w_ptr, g, k_ok, kk, kk_ok, H, 2, 1, ACC),
            h_same,
            PREC,
        )
        g += H
        pre_o += dot2(
            w_tile(w_ptr, g, k_ok, kk, kk_ok, H, 2, 0, ACC),
            h_above,
            w_tile(w_ptr, g, k_ok, kk, kk_ok, H, 2, 1, ACC),
            h_same,
            PREC,
        )
        g += H
        pre_g += dot2(
            w_tile(w_ptr, g, k_ok, kk, kk_ok, H, 2, 0, ACC),
            h_above,
            w_tile(w_ptr, g, k_ok, kk, kk_ok, H, 2, 1, ACC),
            h_same,
            PREC,
        )
    return pre_i, pre_f, pre_o, pre_g


@triton.jit
def _diagonal_fwd_kernel(
    x_ptr,
    w_ptr,
    h_ptr,
    c_ptr,
    H,
    R,
    S,
    W,
    BH: tl.constexpr,
    BK: tl.constexpr,
    RP: tl.constexpr,
    ACC: tl.constexpr,
    PREC: tl.constexpr,
):
    """One program per image. x: (B, 4H, R, S); w: (4H, H, 2); h, c: (B, H, R, S)."""
    b = tl.program_id(0).to(tl.int64)
    r = tl.arange(0, RP)
    r_ok = r < R
    RS = R * S
    x_base = x_ptr + b * 4 * H * RS
    hc_base = b * H * RS
    for j in range(S):
        inside = _inside(j, r, r_ok, W)
        for hb in range(0, H, BH):
            k, k_ok, valid, off = _unit_block(hb, r, r_ok, j, H, R, S, BH)
            pre_i, pre_f, pre_o, pre_g = _gates(
                x_base,
                w_ptr,
                h_ptr,
                off,
                hc_base,
                k,
                k_ok,
                r,
                r_ok,
                valid,
                j,
                H,
                R,
                S,
                BK,
                ACC,
                PREC,
            )
            c_prev = tl.load(c_ptr + hc_base + off - 1, mask=valid & (j >= 1), other=0.0).to(ACC)
            h, c = lstm_cell_fwd(pre_i, pre_f, pre_o, pre_g, c_prev)
            h = tl.where(inside[None, :], h, 0.0)  # the skew's padding stays zero
            c = tl.where(inside[None, :], c, 0.0)
            tl.store(h_ptr + hc_base + off, h.to(h_ptr.dtype.element_ty), mask=valid)
            tl.store(c_ptr + hc_base + off, c.to(c_ptr.dtype.element_ty), mask=valid)
        tl.debug_barrier()  # column j of h, c is read by every thread at column j + 1


@triton.jit
def _diagonal_bwd_kernel(
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
    S,
    W,
    BH: tl.constexpr,
    BK: tl.constexpr,
    RP: tl.constexpr,
    ACC: tl.constexpr,
    PREC: tl.constexpr,
):
    """One program per image, columns in reverse. Writes gx = d(loss)/d(x_gates).
    dc: (2, B, H, R) scratch in ACC, dL/dc carried between columns (j % 2 is written)."""
    b = tl.program_id(0).to(tl.int64)
    r = tl.arange(0, RP)
    r_ok = r < R
    RS = R * S
    gate = H * RS
    x_base = x_ptr + b * 4 * H * RS
    gx_base = gx_ptr + b * 4 * H * RS
    hc_base = b * H * RS
    for jj in range(S):
        j = S - 1 - jj
        nxt = j + 1 < S
        inside = _inside(j, r, r_ok, W)
        for hb in range(0, H, BH):
            k, k_ok, valid, off = _unit_block(hb, r, r_ok, j, H, R, S, BH)
            pre_i, pre_f, pre_o, pre_g = _gates(
                x_base,
                w_ptr,
                h_ptr,
                off,
                hc_base,
                k,
                k_ok,
                r,
                r_ok,
                valid,
                j,
                H,
                R,
                S,
                BK,
                ACC,
                PREC,
            )
            # dL/dh[r, j] = W1^T dpre[r, j + 1] + W0^T dpre[r + 1, j + 1], from gx.
            dh = tl.load(gh_ptr + hc_base + off, mask=valid, other=0.0).to(ACC)
            for gb in range(0, 4 * H, BK):
                g = gb + tl.arange(0, BK)
                g_ok = g < 4 * H
                rows = g_ok[:, None] & r_ok[None, :] & nxt
                gp = gx_base + g[:, None] * RS + r[None, :] * S + (j + 1)
                d_same = tl.load(gp, mask=rows, other=0.0).to(ACC)
                d_below = tl.load(gp + S, mask=rows & (r + 1 < R)[None, :], other=0.0).to(ACC)
                dh += dot2(
                    w_tile_t(w_ptr, k, k_ok, g, g_ok, H, 2, 1, ACC),
                    d_same,
                    w_tile_t(w_ptr, k, k_ok, g, g_ok, H, 2, 0, ACC),
                    d_below,
                    PREC,
                )
            dc_off = (b * H + k[:, None]) * R + r[None, :]
            dc = tl.load(gc_ptr + hc_base + off, mask=valid, other=0.0).to(ACC) + tl.load(
                dc_ptr + ((j + 1) % 2) * B * H * R + dc_off, mask=valid & nxt, other=0.0
            )
            c_prev = tl.load(c_ptr + hc_base + off - 1, mask=valid & (j >= 1), other=0.0).to(ACC)
            c_cur = tl.load(c_ptr + hc_base + off, mask=valid, other=0.0).to(ACC)
            d_i, d_f, d_o, d_g, dc_prev = lstm_cell_bwd(
                pre_i, pre_f, pre_o, pre_g, c_prev, c_cur, dh, dc
            )
            keep = inside[None, :]  # no gradient flows through the skew's padding
            ty = gx_ptr.dtype.element_ty
            tl.store(gx_base + off, tl.where(keep, d_i, 0.0).to(ty), mask=valid)
            tl.store(gx_base + off + gate, tl.where(keep, d_f, 0.0).to(ty), mask=valid)
            tl.store(gx_base + off + 2 * gate, tl.where(keep, d_o, 0.0).to(ty), mask=valid)
            tl.store(gx_base + off + 3 * gate, tl.where(keep, d_g, 0.0).to(ty), mask=valid)
            tl.store(
                dc_ptr + (j % 2) * B * H * R + dc_off, tl.where(keep, dc_prev, 0.0), mask=valid
            )
        tl.debug_barrier()  # column j of gx and dc is read by every thread at column j - 1


def _fwd(x_gates, w_ss, block=16):
    """x_gates: (B, 4H, R, S), w_ss: (4H, H, 2) -> h, c: (B, H, R, S)."""
    x_gates, w_ss = contiguous(x_gates, w_ss)
    B, H, R, S, BH = scan_sizes(x_gates, block)
    h = x_gates.new_empty(B, H, R, S)
    c = x_gates.new_empty(B, H, R, S)
    _diagonal_fwd_kernel[(B,)](
        x_gates,
        w_ss,
        h,
        c,
        H,
        R,
        S,
        S - R + 1,
        BH=BH,
        BK=BH,
        RP=pow2(R),
        **dtype_constexprs(x_gates.dtype),
        num_warps=4,
        num_stages=1,
    )
    return h, c


def _bwd(grad_h, grad_c, x_gates, w_ss, h, c, block=16):
    """Gradients (grad_x_gates: (B, 4H, R, S), grad_w_ss: (4H, H, 2))."""
    grad_h, grad_c, x_gates, w_ss, h, c = contiguous(grad_h, grad_c, x_gates, w_ss, h, c)
    B, H, R, S, BH = scan_sizes(x_gates, block)
    grad_x = torch.empty_like(x_gates)
    dc = x_gates.new_empty(2, B, H, R, dtype=acc_torch_dtype(x_gates.dtype))
    _diagonal_bwd_kernel[(B,)](
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
        S,
        S - R + 1,
        BH=BH,
        BK=BH,
        RP=pow2(R),
        **dtype_constexprs(x_gates.dtype),
        num_warps=4,
        num_stages=1,
    )
    # w_ss[:, :, 1] saw h[:, :, r, j-1]; w_ss[:, :, 0] saw h[:, :, r-1, j-1].
    h_same = F.pad(h, (1, 0))[..., :S]
    h_above = F.pad(h_same, (0, 0, 1, 0))[..., :R, :]
    grad_w = torch.stack(
        [
            torch.einsum("bgrs,bkrs->gk", grad_x, h_above),
            torch.einsum("bgrs,bkrs->gk", grad_x, h_same),
        ],
        dim=-1,
    )
    return grad_x, grad_w


_DiagonalLSTMScan = lstm_scan_function("_DiagonalLSTMScan", _fwd, _bwd)


def diagonal_lstm_scan_triton(x_gates: torch.Tensor, w_ss: torch.Tensor):
    """Diagonal LSTM scan over a skewed map (Triton; differentiable).

    Args:
        x_gates: (B, 4H, R, S)  gate pre-activations [i, f, o, g], S = R + W - 1
        w_ss:    (4H, H, 2)     state-to-state kernel: [..., 0] row above, [..., 1] same row
    Returns:
        (h, c), each (B, H, R, S), zero outside the image; in x_gates' dtype (computed in
        float32, or float64 for float64 inputs).
    Example:
        >>> h, c = diagonal_lstm_scan_triton(torch.randn(2, 64, 28, 55, device="cuda"),
        ...                                  torch.randn(64, 16, 2, device="cuda"))
    """
    check_device("diagonal_lstm_scan", x_gates, w_ss)
    return _DiagonalLSTMScan.apply(x_gates, w_ss)
