"""NADE outputs by the incremental hidden update in Triton: forward and backward.

Semantics and reference: ``pixelar.ops.nade_forward`` / ``nade_forward_ref``.

Design. The hidden units are independent of each other along the whole recurrence
(a_{d+1}[k] = a_d[k] + W[k, d] x_d), so the grid is (batch tiles) x (hidden tiles) and each
program keeps its (BB, BH) tile of the pre-activation a in registers across all D steps:
    forward:  out_d partial = sigmoid(a_d) @ V[d, :, tile].T   (summed over hidden tiles
              afterwards: one (n_hidden_tiles, B, D, O) buffer, a few KB)
    backward: runs the D steps in reverse with the running gradient G_d = dL/da_d in
              registers; a_d is recovered by subtracting W[:, d] x_d from a_D, in float64
              so the subtraction does not drift. Sums over the batch (grad W, V, c) are
              atomic adds of each program's tile sums; sums over the hidden units
              (grad x) go through a small partial buffer.
Neither direction ever forms the (B, D, Hd) tensor of hidden activations.
"""

import torch
import triton
import triton.language as tl

from ._common import acc_torch_dtype, check_device, dtype_constexprs, pow2, sigmoid

BLOCK_B = 16  # batch rows per program (tl.dot needs >= 16 on the GPU)
BLOCK_H = 64  # hidden units per program


@triton.jit
def _program_tile(B, Hd, O, BB: tl.constexpr, BH: tl.constexpr, OP: tl.constexpr):
    """This program's tile of the (batch tiles) x (hidden tiles) grid: ph, its hidden tile;
    rb (BB,) int64 batch rows, rk (BH,) hidden units, ro (OP,) outputs; and bm, km, om,
    their in-range masks."""
    ph = tl.program_id(1)
    rb = (tl.program_id(0) * BB + tl.arange(0, BB)).to(tl.int64)
    rk = ph * BH + tl.arange(0, BH)
    ro = tl.arange(0, OP)
    return ph, rb, rk, ro, rb < B, rk < Hd, ro < O


@triton.jit
def _nade_fwd_kernel(
    x_ptr,
    wt_ptr,
    c_ptr,
    v_ptr,
    part_ptr,
    B,
    D,
    Hd,
    O,
    BB: tl.constexpr,
    BH: tl.constexpr,
    OP: tl.constexpr,
    ACC: tl.constexpr,
    PREC: tl.constexpr,
    USE_DOT: tl.constexpr,
):
    """x: (B, D); wt = W.T: (D, Hd); c: (Hd,); V: (D, O, Hd) -> part: (nH, B, D, O),
    part[tile] = sigmoid(a_d[:, tile]) @ V[d, :, tile].T."""
    ph, rb, rk, ro, bm, km, om = _program_tile(B, Hd, O, BB, BH, OP)
    a = tl.zeros([BB, BH], dtype=ACC) + tl.load(c_ptr + rk, mask=km, other=0.0).to(ACC)[None, :]
    part = part_ptr + ((ph * B + rb[:, None]) * D) * O + ro[None, :]
    for d in range(D):
        h = sigmoid(a)
        v = tl.load(
            v_ptr + (d * O + ro[:, None]) * Hd + rk[None, :],
            mask=om[:, None] & km[None, :],
            other=0.0,
        ).to(ACC)
        if USE_DOT:
            out = tl.dot(h, tl.trans(v), input_precision=PREC)
        else:
            out = tl.sum(h[:, None, :] * v[None, :, :], axis=2)
        tl.store(part + d * O, out, mask=bm[:, None] & om[None, :])
        xd = tl.load(x_ptr + rb * D + d, mask=bm, other=0.0).to(ACC)
        wd = tl.load(wt_ptr + d * Hd + rk, mask=km, other=0.0).to(ACC)
        a += xd[:, None] * wd[None, :]


@triton.jit
def _nade_bwd_kernel(
    go_ptr,
    x_ptr,
    wt_ptr,
    c_ptr,
    v_ptr,
    gx_part_ptr,
    gwt_ptr,
    gc_ptr,
    gv_ptr,
    B,
    D,
    Hd,
    O,
    BB: tl.constexpr,
    BH: tl.constexpr,
    OP: tl.constexpr,
    ACC: tl.constexpr,
    PREC: tl.constexpr,
    USE_DOT: tl.constexpr,
):
    """Reverse scan. Accumulates into gwt: (D, Hd), gc: (Hd,), gv: (D, O, Hd) (zeroed,
    atomic adds over batch tiles); writes gx_part: (nH, B, D) (summed over hidden tiles)."""
    ph, rb, rk, ro, bm, km, om = _program_tile(B, Hd, O, BB, BH, OP)
    vm = om[:, None] & km[None, :]  # the (OP, BH) tile of V and grad V in range
    # a_D = c + sum_d x_d W[:, d], in float64: a_d is recovered below by subtraction.
    a = (
        tl.zeros([BB, BH], dtype=tl.float64)
        + tl.load(c_ptr + rk, mask=km, other=0.0).to(tl.float64)[None, :]
    )
    for d in range(D):
        xd = tl.load(x_ptr + rb * D + d, mask=bm, other=0.0).to(tl.float64)
        wd = tl.load(wt_ptr + d * Hd + rk, mask=km, other=0.0).to(tl.float64)
        a += xd[:, None] * wd[None, :]
    G = tl.zeros([BB, BH], dtype=ACC)  # dL/da_{d+1}, summed over every later output
    for dd in range(D):
        d = D - 1 - dd
        xd = tl.load(x_ptr + rb * D + d, mask=bm, other=0.0)
        wd = tl.load(wt_ptr + d * Hd + rk, mask=km, other=0.0)
        # x_d and W[:, d] enter every a_{d'} with d' > d.
        tl.store(
            gx_part_ptr + (ph * B + rb) * D + d, tl.sum(G * wd.to(ACC)[None, :], axis=1), mask=bm
        )
        tl.atomic_add(gwt_ptr + d * Hd + rk, tl.sum(G * xd.to(ACC)[:, None], axis=0), mask=km)
        a -= xd.to(tl.float64)[:, None] * wd.to(tl.float64)[None, :]
        h = sigmoid(a.to(ACC))
        g = tl.load(
            go_ptr + (rb[:, None] * D + d) * O + ro[None, :],
            mask=bm[:, None] & om[None, :],
            other=0.0,
        ).to(ACC)
        if USE_DOT:
            v = tl.load(v_ptr + (d * O + ro[:, None]) * Hd + rk[None, :], mask=vm, other=0.0).to(
                ACC
            )
            gv = tl.dot(tl.trans(g), h, input_precision=PREC)
            gh = tl.dot(g, v, input_precision=PREC)
            tl.atomic_add(gv_ptr + (d * O + ro[:, None]) * Hd + rk[None, :], gv, mask=vm)
        else:
            # One output at a time, in 2-D tiles only. The 3-D form, gh = sum over axis 1 of
            # g[:, :, None] * v[None, :, :], compiled by Triton 3.6 for an H200, counted each
            # term once per thread its layout put along the padded output axis: grad x, W
            # and c came out 8 times too large at O = 1 and 2 times at O = 3 (grad V, b and
            # the forward were right; benchmarks/results/gpu_triton_nade_grads.txt). The
            # interpreter (numpy) cannot show it; benchmarks/gpu.py checks it on a GPU.
            gh = tl.zeros([BB, BH], dtype=ACC)
            for o in tl.static_range(OP):
                if o < O:
                    g_o = tl.sum(tl.where(ro[None, :] == o, g, 0.0), axis=1)  # (BB,)
                    v_o = tl.load(v_ptr + (d * O + o) * Hd + rk, mask=km, other=0.0).to(ACC)
                    tl.atomic_add(
                        gv_ptr + (d * O + o) * Hd + rk, tl.sum(g_o[:, None] * h, axis=0), mask=km
                    )
                    gh += g_o[:, None] * v_o[None, :]
        G += gh * h * (1.0 - h)
    tl.atomic_add(gc_ptr + rk, tl.sum(G, axis=0), mask=km)


def _out_block(O):
    """Padded output width and whether the O-contraction uses tl.dot (needs >= 16)."""
    OP = triton.next_power_of_2(O)
    if OP >= 8:
        OP = max(OP, 16)
    return OP, OP >= 16


def _grid(B, Hd, block_h):
    return (triton.cdiv(B, BLOCK_B), triton.cdiv(Hd, block_h))


def _fwd(x, W, c, V, b, block_h=BLOCK_H):
    """x: (B, D), W: (Hd, D), c: (Hd,), V: (D, O, Hd), b: (D, O) -> (B, D, O)."""
    B, D = x.shape
    Hd, O = W.shape[0], V.shape[1]
    if B * D * O * Hd == 0:  # nothing to launch: out = b
        return (x.new_zeros(B, D, O) + b).to(x.dtype)
    BH = min(block_h, pow2(Hd))
    OP, use_dot = _out_block(O)
    grid = _grid(B, Hd, BH)
    part = x.new_empty(grid[1], B, D, O, dtype=acc_torch_dtype(x.dtype))
    _nade_fwd_kernel[grid](
        x.contiguous(),
        W.t().contiguous(),
        c.contiguous(),
        V.contiguous(),
        part,
        B,
        D,
        Hd,
        O,
        BB=BLOCK_B,
        BH=BH,
        OP=OP,
        **dtype_constexprs(x.dtype),
        USE_DOT=use_dot,
        num_warps=4,
    )
    return (part.sum(0) + b).to(x.dtype)


def _bwd(grad_out, x, W, c, V, b, block_h=BLOCK_H):
    """Gradients (x: (B, D), W: (Hd, D), c: (Hd,), V: (D, O, Hd), b: (D, O))."""
    B, D = x.shape
    Hd, O = W.shape[0], V.shape[1]
    if B * D * O * Hd == 0:  # nothing to launch: only b has a (possibly) nonzero gradient
        return (
            torch.zeros_like(x),
            torch.zeros_like(W),
            torch.zeros_like(c),
            torch.zeros_like(V),
            grad_out.sum(0).to(b.dtype),
        )
    BH = min(block_h, pow2(Hd))
    OP, use_dot = _out_block(O)
    grid = _grid(B, Hd, BH)
    acc = acc_torch_dtype(x.dtype)
    gx_part = x.new_empty(grid[1], B, D, dtype=acc)
    gwt = x.new_zeros(D, Hd, dtype=acc)
    gc = x.new_zeros(Hd, dtype=acc)
    gv = x.new_zeros(D, O, Hd, dtype=acc)
    _nade_bwd_kernel[grid](
        grad_out.contiguous(),
        x.contiguous(),
        W.t().contiguous(),
        c.contiguous(),
        V.contiguous(),
        gx_part,
        gwt,
        gc,
        gv,
        B,
        D,
        Hd,
        O,
        BB=BLOCK_B,
        BH=BH,
        OP=OP,
        **dtype_constexprs(x.dtype),
        USE_DOT=use_dot,
        num_warps=4,
    )
    return (
        gx_part.sum(0).to(x.dtype),
        gwt.t().to(W.dtype),
        gc.to(c.dtype),
        gv.to(V.dtype),
        grad_out.sum(0).to(b.dtype),
    )


class _NADEForward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, W, c, V, b):
        ctx.save_for_backward(x, W, c, V, b)
        return _fwd(x, W, c, V, b)

    @staticmethod
    def backward(ctx, grad_out):
        return _bwd(grad_out, *ctx.saved_tensors)


def nade_forward_triton(x, W, c, V, b):
    """NADE outputs by the incremental hidden update (Triton; differentiable in every input).

    Args:
        x: (B, D)      inputs (binary values as floats for NADE; reals for RNADE)
        W: (Hd, D)     input-to-hidden weights, column d is added after dimension d
        c: (Hd,)       hidden bias
        V: (D, O, Hd)  per-dimension output weights
        b: (D, O)      per-dimension output bias
    Returns:
        (B, D, O); out[:, d] depends only on x[:, :d]. In x's dtype (computed in float32,
        or float64 for float64 inputs). The backward sums over the batch with atomic adds,
        so on a GPU its last bits may vary from run to run.
    Example:
        >>> out = nade_forward_triton(x, W, c, V, b)  # x: (64, 784), W: (500, 784), ...
    """
    check_device("nade_forward", x, W, c, V, b)
    return _NADEForward.apply(x, W, c, V, b)
