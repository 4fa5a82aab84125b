"""The ops nade_sample and rnade_sample (pixelar/ops/nade_sample.py) against their PyTorch
references; input checks; schema / fake-kernel checks (torch.library.opcheck); the CUDA
kernels against the CPU kernels (GPU only)."""

import pytest
import torch

import pixelar

from conftest import cpp_built, report_diff
from sampling_testing import assert_samples_agree, needs_cuda, require_cuda_kernel

pytestmark = pytest.mark.skipif(not cpp_built(), reason="pixelar._C is not built")


@pytest.mark.parametrize("n", [11, 37])  # tiles of 6 + 5, and of 16 + 16 + 5 (2 threads)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_nade_sample_matches_reference(dtype, n):
    g = torch.Generator().manual_seed(0)
    D, Hd = 13, 9
    W, c = (torch.randn(Hd, D, generator=g, dtype=dtype), torch.randn(Hd, generator=g, dtype=dtype))
    V, b = (
        torch.randn(D, 1, Hd, generator=g, dtype=dtype),
        torch.randn(D, 1, generator=g, dtype=dtype),
    )
    u = torch.rand(n, D, generator=g, dtype=torch.float64)
    cond = torch.randint(0, 2, (n, D), generator=g)
    cond[torch.rand(n, D, generator=g) < 0.7] = -1
    # W contiguous, and stored transposed as the NADE models keep it (read in place)
    for cnd, W_ in [(cnd, W_) for cnd in (None, cond) for W_ in (W, W.t().contiguous().t())]:
        out = pixelar.ops.nade_sample(u, cnd, W_, c, V, b)
        ref = pixelar.ops.nade_sample_ref(u, cnd, W_, c, V, b)
        assert out.dtype == torch.int64 and torch.equal(out, ref)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(
    "n, D, Hd, scale",
    [
        (70, 90, 41, 0.01),  # tiles of 32 + 32 + 6; 16 + 16 + 8 + 1 units; 32-product chains
        (5, 40, 24, 2.0),  # one tile; 16 + 8 units; exact steps forced by the drift bound
        (8, 1, 17, 1.0),  # a single dimension: no hidden step at all
    ],
)
def test_nade_sample_walk_paths_match_reference(dtype, n, D, Hd, scale):
    """The kernel's walk (nade_hidden.h: product, exact and restart steps, each fused with the
    next dimension's dot product, and the kept rows' shared dots) on unit counts that use
    its 16-, 8- and 1-unit loops, chains of products cut by either bound, and tiles of 32."""
    g = torch.Generator().manual_seed(1)
    W = torch.randn(Hd, D, generator=g, dtype=dtype) * scale
    c, V, b = (
        torch.randn(Hd, generator=g, dtype=dtype),
        torch.randn(D, 1, Hd, generator=g, dtype=dtype),
        torch.randn(D, 1, generator=g, dtype=dtype),
    )
    outs = []
    for seed in range(3):
        u = torch.rand(n, D, generator=g, dtype=torch.float64)
        outs.append(pixelar.ops.nade_sample(u, None, W, c, V, b))
        assert torch.equal(outs[-1], pixelar.ops.nade_sample_ref(u, None, W, c, V, b)), seed
    assert 0 < torch.cat(outs).float().mean() < 1  # both values drawn


def _nade_case(seed, dtype, n, D, Hd):
    g = torch.Generator().manual_seed(seed)
    W, c = (torch.randn(Hd, D, generator=g, dtype=dtype), torch.randn(Hd, generator=g, dtype=dtype))
    V, b = (
        torch.randn(D, 1, Hd, generator=g, dtype=dtype),
        torch.randn(D, 1, generator=g, dtype=dtype),
    )
    return torch.rand(n, D, generator=g, dtype=torch.float64), None, W, c, V, b


def test_nade_kernels_reuse_their_temporaries_safely():
    """The CPU kernels keep W^T and exp(-W^T) in memory reused across calls (per calling
    thread, kernel_common.h: reused_empty): calls whose sizes grow and shrink and whose
    dtypes alternate, and calls from two threads at once, still match the reference."""
    import threading

    cases = [(s, dt, n, D, Hd) for s, (dt, n, D, Hd) in enumerate([
        (torch.float32, 9, 30, 40), (torch.float32, 5, 7, 3), (torch.float64, 9, 50, 41),
        (torch.float32, 17, 60, 50), (torch.float64, 3, 5, 6), (torch.float32, 9, 30, 40),
    ])]  # fmt: skip
    for case in cases:
        args = _nade_case(*case)
        assert torch.equal(pixelar.ops.nade_sample(*args), pixelar.ops.nade_sample_ref(*args))
        x = (args[0] < 0.5).to(args[2].dtype)
        out = pixelar.ops.nade_forward(x, *args[2:])
        torch.testing.assert_close(out, pixelar.ops.nade_forward_ref(x, *args[2:]))
    results, errors = {}, []

    def run(k):
        try:
            for case in cases[k::2] * 5:
                args = _nade_case(*case)
                results.setdefault(k, []).append(
                    torch.equal(pixelar.ops.nade_sample(*args), pixelar.ops.nade_sample_ref(*args))
                )
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and all(all(r) for r in results.values()) and len(results) == 2


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_nade_kernels_see_every_change_of_W(dtype):
    """The CPU kernels keep exp(-W^T) and the columns' max |W| from one call to the next
    while W's bytes are unchanged (nade_hidden.h: ColumnCache), shared by the training
    forward, its backward and the sampler. A W changed where no version counter sees it
    (through .data), in a single element, or replaced by another tensor of the same shape
    is seen at once: the forward (which meets the change first), W's gradient and the
    samples follow the references. Each change is checked to change the reference's
    samples, so kernels that kept stale facts would fail here."""
    u, _, W, c, V, b = _nade_case(3, dtype, 24, 40, 33)
    W2 = torch.randn(W.shape, generator=torch.Generator().manual_seed(4), dtype=dtype)
    x = (u < 0.5).to(dtype)
    changes = [
        ("none", W, None),
        ("in place through .data", W, lambda: W.data.mul_(-2.0)),
        ("one element", W, lambda: W.data[5].fill_(6.0)),
        ("another tensor", W2, None),
        ("back to the first", W, None),
    ]
    previous = None
    for name, W_now, change in changes:
        if change is not None:
            change()
        W_grad = W_now.detach().clone().requires_grad_()
        logits = pixelar.ops.nade_forward(x, W_grad, c, V, b)
        torch.testing.assert_close(
            logits, pixelar.ops.nade_forward_ref(x, W_now, c, V, b), msg=name
        )
        (grad_W,) = torch.autograd.grad(logits.sin().sum(), W_grad)
        W_ref = W_now.detach().clone().requires_grad_()
        (grad_W_ref,) = torch.autograd.grad(
            pixelar.ops.nade_forward_ref(x, W_ref, c, V, b).sin().sum(), W_ref
        )
        torch.testing.assert_close(grad_W, grad_W_ref, msg=name)
        ref = pixelar.ops.nade_sample_ref(u, None, W_now, c, V, b)
        assert torch.equal(pixelar.ops.nade_sample(u, None, W_now, c, V, b), ref), name
        if name != "none":
            assert not torch.equal(ref, previous), f"{name}: the change does not show"
        previous = ref


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_rnade_sample_matches_reference(dtype):
    g = torch.Generator().manual_seed(0)
    n, D, Hd, K = 10, 6, 7, 3
    W, c = (torch.randn(Hd, D, generator=g, dtype=dtype), torch.randn(Hd, generator=g, dtype=dtype))
    V, b = (
        torch.randn(D, 3 * K, Hd, generator=g, dtype=dtype),
        torch.randn(D, 3 * K, generator=g, dtype=dtype),
    )
    u = torch.rand(n, D, generator=g, dtype=torch.float64)
    z = torch.randn(n, D, generator=g, dtype=torch.float64)
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-4)
    for W_ in (W, W.t().contiguous().t()):  # contiguous, and stored transposed (RNADE's)
        out = pixelar.ops.rnade_sample(u, z, W_, c, V, b, -7.0, 7.0)
        ref = pixelar.ops.rnade_sample_ref(u, z, W_, c, V, b, -7.0, 7.0)
        report_diff("rnade_sample", out, ref)
        torch.testing.assert_close(out, ref, **tol)


def test_bad_inputs_raise_value_error():
    W = torch.zeros(4, 5, dtype=torch.float64)
    with pytest.raises(ValueError, match="V"):
        pixelar.ops.nade_sample(
            torch.rand(2, 5, dtype=torch.float64),
            None,
            W,
            W[:, 0],
            torch.zeros(5, 2, 4, dtype=torch.float64),
            torch.zeros(5, 2, dtype=torch.float64),
        )
    # RNADE with no mixture component (V: (D, 0, Hd)): an error, from the wrapper and from
    # the raw op (which once read past its buffers)
    u = torch.rand(2, 5, dtype=torch.float64)
    rnade_args = (
        u,
        torch.randn_like(u),
        W,
        W[:, 0],
        torch.zeros(5, 0, 4, dtype=torch.float64),
        torch.zeros(5, 0, dtype=torch.float64),
        -5.0,
        5.0,
    )
    with pytest.raises(ValueError, match="K >= 1"):
        pixelar.ops.rnade_sample(*rnade_args)
    with pytest.raises(RuntimeError, match="K >= 1"):
        torch.ops.pixelar.rnade_sample(*rnade_args)


def test_opcheck():
    g = torch.Generator().manual_seed(0)
    W, c = torch.randn(4, 5, generator=g), torch.randn(4, generator=g)
    V, b = torch.randn(5, 1, 4, generator=g), torch.randn(5, 1, generator=g)
    u = torch.rand(3, 5, generator=g, dtype=torch.float64)
    torch.library.opcheck(torch.ops.pixelar.nade_sample, (u, None, W, c, V, b))
    V3, b3 = torch.randn(5, 6, 4, generator=g), torch.randn(5, 6, generator=g)
    z = torch.randn(3, 5, generator=g, dtype=torch.float64)
    torch.library.opcheck(torch.ops.pixelar.rnade_sample, (u, z, W, c, V3, b3, -7.0, 7.0))


def nade_inputs(dtype, n, D, Hd, O, seed=0):
    g = torch.Generator().manual_seed(seed)
    W, c = (torch.randn(Hd, D, generator=g, dtype=dtype), torch.randn(Hd, generator=g, dtype=dtype))
    V, b = (
        torch.randn(D, O, Hd, generator=g, dtype=dtype) / Hd**0.5,
        torch.randn(D, O, generator=g, dtype=dtype),
    )
    u = torch.rand(n, D, generator=g, dtype=torch.float64)
    z = torch.randn(n, D, generator=g, dtype=torch.float64)
    cond = torch.randint(0, 2, (n, D), generator=g)
    cond[torch.rand(n, D, generator=g) < 0.7] = -1
    return W, c, V, b, u, z, cond


NADE_SIZES = [(11, 13, 9), (37, 50, 600)]


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("n,D,Hd", NADE_SIZES)
@pytest.mark.parametrize("with_cond", [False, True])
def test_cuda_nade_sample_matches_cpu_op(dtype, n, D, Hd, with_cond):
    require_cuda_kernel("nade_sample")
    W, c, V, b, u, _, cond = nade_inputs(dtype, n, D, Hd, 1)
    cond = cond if with_cond else None
    with pixelar.ops.backend("cpp"):
        ref = pixelar.ops.nade_sample(u, cond, W, c, V, b)
    args = [None if t is None else t.cuda() for t in (u, cond, W, c, V, b)]
    with pixelar.ops.backend("auto"):
        out = pixelar.ops.nade_sample(*args)
    assert out.is_cuda
    assert_samples_agree(out, ref, dtype, "nade_sample")
    if cond is not None:
        given = cond >= 0
        assert torch.equal(out.cpu()[given], cond[given])


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("n,D,Hd,K", [(10, 6, 7, 3), (33, 20, 600, 5)])
def test_cuda_rnade_sample_matches_cpu_op(dtype, n, D, Hd, K):
    require_cuda_kernel("rnade_sample")
    W, c, V, b, u, z, _ = nade_inputs(dtype, n, D, Hd, 3 * K)
    with pixelar.ops.backend("cpp"):
        ref = pixelar.ops.rnade_sample(u, z, W, c, V, b, -7.0, 7.0)
    with pixelar.ops.backend("auto"):
        out = pixelar.ops.rnade_sample(*(t.cuda() for t in (u, z, W, c, V, b)), -7.0, 7.0)
    assert out.is_cuda and out.dtype == dtype
    report_diff("rnade_sample cuda vs cpu", out.cpu(), ref)
    if dtype == torch.float64:
        torch.testing.assert_close(out.cpu(), ref, rtol=1e-10, atol=1e-10)
    else:  # a component choice at a threshold changes that value: allow a few
        close = torch.isclose(out.cpu(), ref, rtol=1e-4, atol=1e-4)
        assert (~close).sum().item() <= max(1, ref.numel() // 50)


@needs_cuda
def test_cuda_kernels_check_devices_and_dtypes():
    require_cuda_kernel("nade_sample")
    W, c, V, b, u, z, _ = nade_inputs(torch.float32, 3, 5, 4, 1)
    ug, Wg, cg, Vg, bg = (t.cuda() for t in (u, W, c, V, b))
    with pytest.raises(RuntimeError, match="W must be a CUDA tensor"):
        torch.ops.pixelar.nade_sample(ug, None, W, cg, Vg, bg)
    with pytest.raises(RuntimeError, match="u must be Double"):
        torch.ops.pixelar.nade_sample(ug.float(), None, Wg, cg, Vg, bg)
    with pytest.raises(RuntimeError, match="c must have the dtype|c must be Float"):
        torch.ops.pixelar.nade_sample(ug, None, Wg, cg.double(), Vg, bg)
    with pytest.raises(RuntimeError, match=r"V must be \(D, 3K, Hd\)"):
        torch.ops.pixelar.rnade_sample(ug, z.cuda(), Wg, cg, Vg, bg, -7.0, 7.0)
