"""Sampling of NADE (binary) and RNADE (mixture of Gaussians): the whole D-step loop
(draw dimension d, then the incremental hidden update a += W[:, d] x_d) in one op call,
its reference and dispatch.

    a_0 = c;  h_d = sigmoid(a_d);  out_d = V[d] @ h_d + b[d];  a_{d+1} = a_d + W[:, d] x_d

NADE: x_d = 1 if u_d < sigmoid(out_d) (float64), else 0; a ``cond`` entry >= 0 replaces
the draw (cond values must be < 2; negative: sample). Uniforms must lie in [0, 1); a NaN or
infinite logit (RNADE: any of the 3K outputs) at a drawn dimension raises ValueError with
pixelar/ops/draw.py's NONFINITE_MESSAGE, in the references and the kernels alike.
RNADE: out_d = (logit_pi, mu, log_sigma) of K components each, log_sigma
clamped to [log_scale_min, log_scale_max]; component k = the inverse-CDF draw of
softmax(logit_pi) at u_d (float64), x_d = mu_k + exp(log_sigma_k) * z_d, computed in
float64 and rounded to the model's dtype. The draw rule is pixelar/ops/draw.py's, so
these match the naive samplers fed the same randomness.

The CPU kernel (csrc/cpu/nade_sample.cpp) runs tiles of up to 32 images (fewer when that
would leave a thread without a tile) in lockstep over the dimensions; an image whose hidden
state changes at d takes its dot product V[d + 1] @ h from the new h while it is in
registers. For float32 NADE it
carries e = exp(-a) as a product (e *= exp(-W[:, d]) when x_d = 1, h = 1 / (1 + e)) and
recomputes it from a after at most 32 products, or sooner when the columns' max |W| since
the last exact e add up to more than 60 (the hidden walk of csrc/cpu/nade_hidden.h, shared
with nade_forward), so h is within ~4e-6 (relative) of sigmoid(a); float64 computes
sigmoid(a) at every update.

The CUDA kernel (csrc/cuda/nade_sample.cu) runs one thread block per image, the whole
loop in one launch: threads over the hidden units (a and h in shared memory), block sums
for V[d] @ h, thread 0 draws with the same helpers (csrc/include/pixelar/sampling_math.h).
It computes h = sigmoid(a) at every update that changes a (float32: the CPU kernels' exp
formula, math::SimdMath). Dispatch (pixelar.ops._backend, no Triton kernel): under backend
"auto", CPU tensors run the C++ kernel and CUDA tensors the CUDA kernel; a CUDA tensor
without a CUDA kernel built raises ``BackendUnavailableError`` (nothing falls back
silently); backend "reference" runs the PyTorch loops below (``nade_sample_ref``,
``rnade_sample_ref``) on any device.
"""

import torch

from .._extension import extension_loaded
from ._backend import dispatch, register
from ._checks import (
    check_condition,
    check_finite,
    check_float_tensor,
    check_like,
    check_real,
    check_shape,
    check_uniforms,
)
from .draw import check_finite_logits, draw_bernoulli, draw_categorical
from .nade_forward import weight_layout as _weight_layout


def _check_params(op, W, c, V, b, O=None):
    for name, t, nd in (("W", W, 2), ("c", c, 1), ("V", V, 3), ("b", b, 2)):
        check_float_tensor(op, name, t, nd)
        check_like(op, name, t, "W", W)
    Hd, D = W.shape
    O = V.shape[1] if O is None else O
    check_shape(op, "c", c, (Hd,))
    check_shape(op, "V", V, (D, O, Hd))
    check_shape(op, "b", b, (D, O))
    return D


def _check_noise(op, name, t, n, D):
    check_float_tensor(op, name, t, 2)
    if t.dtype != torch.float64:
        raise ValueError(f"{op}: {name} must be float64, got {t.dtype}")
    check_shape(op, name, t, (n, D))


def _check_nade(u, cond, W, c, V, b):
    """The checks of nade_sample (shared by the wrapper and the reference)."""
    op = "nade_sample"
    D = _check_params(op, W, c, V, b, O=1)
    _check_noise(op, "u", u, u.shape[0] if u.dim() == 2 else -1, D)
    check_uniforms(op, "u", u)
    if cond is not None:
        if not isinstance(cond, torch.Tensor) or cond.dtype != torch.int64:
            raise ValueError(
                f"{op}: cond must be an int64 tensor, got "
                f"{getattr(cond, 'dtype', type(cond).__name__)}"
            )
        check_shape(op, "cond", cond, u.shape)
        check_condition(op, "cond", cond, 2)


def _check_rnade(u, z, W, c, V, b, log_scale_min, log_scale_max):
    """The checks of rnade_sample (shared by the wrapper and the reference); returns the
    clamp bounds as floats."""
    op = "rnade_sample"
    D = _check_params(op, W, c, V, b)
    if V.shape[1] % 3 or V.shape[1] == 0:
        raise ValueError(
            f"{op}: V must have 3K outputs per dimension (K >= 1 components), got {V.shape[1]}"
        )
    n = u.shape[0] if u.dim() == 2 else -1
    _check_noise(op, "u", u, n, D)
    _check_noise(op, "z", z, n, D)
    check_uniforms(op, "u", u)
    check_finite(op, "z", z)
    lo = check_real(op, "log_scale_min", log_scale_min)
    hi = check_real(op, "log_scale_max", log_scale_max)
    if lo > hi:
        raise ValueError(f"{op}: need log_scale_min <= log_scale_max, got {lo} > {hi}")
    return lo, hi


def nade_sample_ref(u, cond, W, c, V, b):
    """Pure-PyTorch reference of :func:`nade_sample`: a plain loop over the D dimensions."""
    _check_nade(u, cond, W, c, V, b)
    n, D = u.shape
    a = c.expand(n, -1)
    x = torch.zeros(n, D, dtype=torch.long, device=u.device)
    for d in range(D):
        logit = torch.sigmoid(a) @ V[d, 0] + b[d, 0]
        check_finite_logits(logit, True, d, None if cond is None else cond[:, d] < 0)
        value = draw_bernoulli(logit, u[:, d])
        if cond is not None:
            value = torch.where(cond[:, d] >= 0, cond[:, d], value)
        x[:, d] = value
        a = a + value.to(a.dtype).unsqueeze(1) * W[:, d]
    return x


def nade_sample(u, cond, W, c, V, b):
    """Sample binary NADE vectors, the whole loop in one call (backend in force).

    u:    (n, D) float64 uniforms, one per dimension
    cond: (n, D) int64 or None; entries >= 0 are kept instead of drawn
    W: (Hd, D), c: (Hd,), V: (D, 1, Hd), b: (D, 1)   the model's parameters
    Returns (n, D) int64 in {0, 1}.
    Raises ValueError for u outside [0, 1), cond values >= 2, or a non-finite logit at a
    drawn dimension (pixelar/ops/draw.py: NONFINITE_MESSAGE).
    """
    _check_nade(u, cond, W, c, V, b)
    return dispatch("nade_sample", u.device)(u, cond, W, c, V, b)


def nade_sample_prechecked(u, cond, W, c, V, b):
    """:func:`nade_sample` without the wrapper's Python checks (~0.1-0.2 ms a call), for
    callers whose inputs are valid by construction: ``NADE.sample`` passes its own parameters,
    uniforms from ``torch.rand`` and a condition it has checked. The implementations still
    check what they rely on: the reference everything (``_check_nade``), the C++ kernel
    shapes, dtypes, devices, the uniforms' range and cond's values, the CUDA kernel shapes,
    dtypes and devices; all of them raise on a non-finite logit."""
    return dispatch("nade_sample", u.device)(u, cond, W, c, V, b)


def _nade_compiled(u, cond, W, c, V, b):
    return torch.ops.pixelar.nade_sample(
        u.contiguous(),
        None if cond is None else cond.contiguous(),
        _weight_layout(W),
        *(t.contiguous() for t in (c, V, b)),
    )


def rnade_sample_ref(u, z, W, c, V, b, log_scale_min, log_scale_max):
    """Pure-PyTorch reference of :func:`rnade_sample`: a plain loop over the D dimensions."""
    log_scale_min, log_scale_max = _check_rnade(u, z, W, c, V, b, log_scale_min, log_scale_max)
    n, D = u.shape
    K = V.shape[1] // 3
    a = c.expand(n, -1)
    x = W.new_zeros(n, D)
    for d in range(D):
        out = torch.sigmoid(a) @ V[d].T + b[d]
        check_finite_logits(out, False, d)  # logit_pi, mu and log_sigma
        logit_pi, mu = out[:, :K], out[:, K : 2 * K]
        log_sigma = out[:, 2 * K :].clamp(log_scale_min, log_scale_max)
        k = draw_categorical(logit_pi, u[:, d]).unsqueeze(1)
        value = (
            mu.gather(1, k)[:, 0].double() + log_sigma.gather(1, k)[:, 0].double().exp() * z[:, d]
        )
        x[:, d] = value.to(x.dtype)
        a = a + x[:, d : d + 1] * W[:, d]
    return x


def rnade_sample(u, z, W, c, V, b, log_scale_min, log_scale_max):
    """Sample RNADE vectors, the whole loop in one call (backend in force).

    u: (n, D) float64 uniforms choosing the component; z: (n, D) float64 standard normals
    W: (Hd, D), c: (Hd,), V: (D, 3K, Hd), b: (D, 3K)   [logit_pi | mu | log_sigma] blocks
    log_scale_min, log_scale_max: finite floats, min <= max, the clamp of log_sigma
    Returns (n, D) of W's dtype.
    Raises ValueError for u outside [0, 1), non-finite z, or a non-finite output (logit_pi,
    mu or log_sigma) at some dimension (pixelar/ops/draw.py: NONFINITE_MESSAGE).
    """
    log_scale_min, log_scale_max = _check_rnade(u, z, W, c, V, b, log_scale_min, log_scale_max)
    return dispatch("rnade_sample", u.device)(u, z, W, c, V, b, log_scale_min, log_scale_max)


def _rnade_compiled(u, z, W, c, V, b, log_scale_min, log_scale_max):
    return torch.ops.pixelar.rnade_sample(
        u.contiguous(),
        z.contiguous(),
        _weight_layout(W),
        *(t.contiguous() for t in (c, V, b)),
        float(log_scale_min),
        float(log_scale_max),
    )


# No Triton kernels: backend "triton" raises BackendUnavailableError for these ops.
register("nade_sample", reference=nade_sample_ref, cpp=_nade_compiled, cuda=_nade_compiled)
register("rnade_sample", reference=rnade_sample_ref, cpp=_rnade_compiled, cuda=_rnade_compiled)


def _register():
    if not extension_loaded():
        return
    if hasattr(torch.ops.pixelar, "nade_sample"):

        @torch.library.register_fake("pixelar::nade_sample")
        def _fake_nade(u, cond, W, c, V, b):
            torch._check(u.dim() == 2, lambda: "nade_sample: u must be (n, D)")
            return u.new_empty(u.shape, dtype=torch.int64)

    if hasattr(torch.ops.pixelar, "rnade_sample"):

        @torch.library.register_fake("pixelar::rnade_sample")
        def _fake_rnade(u, z, W, c, V, b, log_scale_min, log_scale_max):
            torch._check(u.dim() == 2, lambda: "rnade_sample: u must be (n, D)")
            return W.new_empty(u.shape)


_register()
