"""Compile every Triton kernel of pixelar for NVIDIA GPUs without a GPU, and report its
registers, spills and shared memory.

    python -m pixelar.kernels.compile_check                  # sm_90 and sm_80, all dtypes
    python -m pixelar.kernels.compile_check --arch 90 --dtype fp32

The interpreter (TRITON_INTERPRET=1, used by the tests) checks the kernels' arithmetic but
never runs Triton's GPU compiler; this does, at the paper's tile sizes, so a kernel that
Triton rejects or that needs more shared memory than the GPU has fails here, not on the day
a GPU is at hand. Exit status 1 if any kernel fails to compile or exceeds the shared memory
of its target. Must run without TRITON_INTERPRET=1.
"""

import argparse
import os
import subprocess
import sys
import tempfile

SMEM_LIMIT = {80: 163 * 1024, 90: 227 * 1024}  # bytes per block (opt-in maximum)
DTYPES = ("fp32", "fp16", "bf16", "fp64")


def cases(dtype):
    """(name, kernel, pointer dtypes, constexprs, num_warps) at the paper's sizes."""
    import triton.language as tl

    from . import conv_residual_block as crb
    from . import diagonal_lstm_scan as diag
    from . import nade_forward as nade
    from . import row_lstm_scan as row

    acc, prec = (tl.float64, "ieee") if dtype == "fp64" else (tl.float32, "tf32x3")
    acc_name = "fp64" if dtype == "fp64" else "fp32"
    scan_ptrs = {
        n: f"*{dtype}" for n in ("x_ptr", "w_ptr", "h_ptr", "c_ptr", "gh_ptr", "gc_ptr", "gx_ptr")
    }
    scan_ptrs["dc_ptr"] = f"*{acc_name}"
    nade_ptrs = {n: f"*{dtype}" for n in ("x_ptr", "wt_ptr", "c_ptr", "v_ptr", "go_ptr")}
    nade_ptrs.update(
        {n: f"*{acc_name}" for n in ("part_ptr", "gx_part_ptr", "gwt_ptr", "gc_ptr", "gv_ptr")}
    )
    out = [
        (
            "diagonal fwd (H=16, R=28)",
            diag._diagonal_fwd_kernel,
            scan_ptrs,
            dict(BH=16, BK=16, RP=32, ACC=acc, PREC=prec),
            4,
        ),
        (
            "diagonal bwd (H=16, R=28)",
            diag._diagonal_bwd_kernel,
            scan_ptrs,
            dict(BH=16, BK=16, RP=32, ACC=acc, PREC=prec),
            4,
        ),
        (
            "row fwd (H=128, W=32)",
            row._row_fwd_kernel,
            scan_ptrs,
            dict(BH=16, BK=16, WP=32, ACC=acc, PREC=prec),
            4,
        ),
        (
            "row bwd (H=128, W=32)",
            row._row_bwd_kernel,
            scan_ptrs,
            dict(BH=16, BK=16, WP=32, ACC=acc, PREC=prec),
            4,
        ),
    ]
    for O, use_dot in ((1, False), (32, True)):
        for direction, kernel in (("fwd", nade._nade_fwd_kernel), ("bwd", nade._nade_bwd_kernel)):
            out.append(
                (
                    f"nade {direction} (O={O})",
                    kernel,
                    nade_ptrs,
                    dict(
                        BB=nade.BLOCK_B, BH=nade.BLOCK_H, OP=O, ACC=acc, PREC=prec, USE_DOT=use_dot
                    ),
                    4,
                )
            )
    # conv_residual_block at F = 32, h = 16: the six _pixel_matmul_kernel calls, as
    # (name, a, gate, res, out) pointer dtypes ("io": the input dtype, "acc": compute), NTAPS,
    # SIGN, RELU_IN, HAS_BIAS, RELU_OUT, K, N; then the three weight gradients.
    kinds = {"io": f"*{dtype}", "acc": f"*{acc_name}"}
    crb_matmuls = (
        ("reduce fwd", ("io", "io", "io", "io"), 1, 1, True, True, True, 32, 16),
        ("conv fwd", ("io", "io", "io", "io"), 5, 1, False, True, True, 16, 16),
        ("expand fwd", ("io", "io", "io", "io"), 1, 1, False, True, False, 16, 32),
        ("expand bwd", ("io", "io", "acc", "acc"), 1, 1, False, False, False, 32, 16),
        ("conv bwd", ("acc", "io", "acc", "acc"), 5, -1, False, False, False, 16, 16),
        ("reduce bwd", ("acc", "io", "io", "io"), 1, 1, False, False, False, 16, 32),
    )
    for name, (a, gate, res, o), ntaps, sign, relu_in, bias, relu_out, K, N in crb_matmuls:
        ptrs = {"w_ptr": kinds["io"], "bias_ptr": kinds["io"]}
        ptrs.update(a_ptr=kinds[a], gate_ptr=kinds[gate], res_ptr=kinds[res], out_ptr=kinds[o])
        flags = dict(NTAPS=ntaps, SIGN=sign, RELU_IN=relu_in, HAS_BIAS=bias, RELU_OUT=relu_out)
        flags.update(HAS_GATE=name.endswith("bwd"), HAS_RES=name in ("expand fwd", "reduce bwd"))
        blocks = dict(BP=crb.BLOCK_P, BK=K, BN=N, ACC=acc, PREC=prec)
        out.append((f"residual {name}", crb._pixel_matmul_kernel, ptrs, {**flags, **blocks}, 4))
    for name, a, b, ntaps, relu_a, K, N in (
        ("grad w_expand", "io", "io", 1, False, 16, 32),
        ("grad w_conv", "io", "acc", 5, False, 16, 16),
        ("grad w_reduce", "io", "acc", 1, True, 32, 16),
    ):
        ptrs = {"a_ptr": kinds[a], "b_ptr": kinds[b], "part_ptr": kinds["acc"]}
        constexprs = dict(NTAPS=ntaps, RELU_A=relu_a, BP=crb.BLOCK_P, BK=K, BN=N)
        constexprs.update(STEPS=crb.CHUNK_STEPS, ACC=acc, PREC=prec)
        out.append((f"residual {name}", crb._weight_grad_kernel, ptrs, constexprs, 4))
    return out


def compile_kernel(kernel, ptrs, constexprs, arch, num_warps):
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    names = kernel.arg_names
    signature = {n: "constexpr" if n in constexprs else ptrs.get(n, "i32") for n in names}
    unknown = [n for n in names if n.endswith("_ptr") and n not in ptrs]
    if unknown:
        raise KeyError(f"no pointer dtype for {unknown}: update compile_check.cases")
    src = ASTSource(
        kernel, signature, constexprs={(names.index(k),): v for k, v in constexprs.items()}
    )
    return triton.compile(
        src, target=GPUTarget("cuda", arch, 32), options=dict(num_warps=num_warps, num_stages=1)
    )


def resource_usage(compiled):
    """'REG:.. STACK:..' of the kernel from cuobjdump (bundled with triton), or ''."""
    import triton

    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    if not os.path.exists(tool):
        return ""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(compiled.asm["cubin"])
        f.flush()
        res = subprocess.run([tool, "-res-usage", f.name], capture_output=True, text=True)
    usage = [line.split()[:2] for line in res.stdout.splitlines() if "REG:" in line]
    return " ".join(usage[0]) if usage else ""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, nargs="+", choices=sorted(SMEM_LIMIT), default=[90, 80])
    parser.add_argument("--dtype", nargs="+", choices=DTYPES, default=list(DTYPES))
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        raise SystemExit("compile_check: unset TRITON_INTERPRET (the interpreter never compiles)")
    failures = 0
    for arch in args.arch:
        for dtype in args.dtype:
            for name, kernel, ptrs, constexprs, num_warps in cases(dtype):
                label = f"sm_{arch} {dtype:4s} {name:28s}"
                try:
                    compiled = compile_kernel(kernel, ptrs, constexprs, arch, num_warps)
                except Exception as exc:  # report every kernel, then fail
                    failures += 1
                    print(f"{label} FAILED {type(exc).__name__}: {exc}"[:600], flush=True)
                    continue
                smem = compiled.metadata.shared
                too_big = smem > SMEM_LIMIT[arch]
                failures += too_big
                print(
                    f"{label} {'TOO MUCH SHARED MEMORY' if too_big else 'ok':4s} "
                    f"smem={smem} {resource_usage(compiled)}",
                    flush=True,
                )
    print(f"compile_check: {failures} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
