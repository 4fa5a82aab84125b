"""Build (once, cached under build/) and load the CUDA-emulation test extension:
tests/cuda_emulation/emulated_kernels.cpp, which compiles pixelar's CUDA kernels and
launchers (csrc/cuda/<op>.cu, without their registration) for the host emulation of
csrc/emulation/cuda_host_emulation.h.

``sanitizer``: None, "asan" (AddressSanitizer + UndefinedBehaviorSanitizer) or "tsan"
(ThreadSanitizer); a sanitized build runs only in a process that preloads the sanitizer's
runtime (tests/test_cuda_emulation.py does that in a subprocess). ``cuda_dir`` replaces
csrc/cuda (a scratch copy with a deleted barrier, for the check that TSan notices).
Environment: PIXELAR_EMU_SANITIZER picks the sanitizer of ``load()`` without arguments,
PIXELAR_EMU_CUDA_DIR its ``cuda_dir`` (to run the tests on an experimental copy of the
kernels).
"""

import hashlib
import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERE = os.path.dirname(os.path.abspath(__file__))

SANITIZER_FLAGS = {
    None: [],
    "asan": [
        "-fsanitize=address,undefined",
        "-fno-sanitize-recover=undefined",
        "-fno-omit-frame-pointer",
    ],
    "tsan": ["-fsanitize=thread", "-fno-omit-frame-pointer"],
}


def load(sanitizer=None, cuda_dir=None, verbose=False):
    """The compiled test extension (a Python module)."""
    import torch.utils.cpp_extension as ext

    if sanitizer is None:
        sanitizer = os.environ.get("PIXELAR_EMU_SANITIZER") or None
    cuda_dir = (
        cuda_dir or os.environ.get("PIXELAR_EMU_CUDA_DIR") or os.path.join(ROOT, "csrc", "cuda")
    )
    tag = sanitizer or "plain"
    if cuda_dir != os.path.join(ROOT, "csrc", "cuda"):
        tag += "_" + hashlib.sha1(cuda_dir.encode()).hexdigest()[:8]
    build_dir = os.path.join(ROOT, "build", f"cuda_emulation_{tag}")
    os.makedirs(build_dir, exist_ok=True)
    flags = [
        "-std=c++20",
        "-O1",
        "-g0",
        "-ffp-contract=off",
        "-fno-fast-math",
        "-Wno-unknown-pragmas",
    ] + SANITIZER_FLAGS[sanitizer]
    return ext.load(
        name=f"pixelar_cuda_emulation_{tag}",
        sources=[os.path.join(HERE, "emulated_kernels.cpp")],
        extra_include_paths=[
            cuda_dir,
            os.path.join(ROOT, "csrc", "include"),
            os.path.join(ROOT, "csrc", "emulation"),
        ],
        extra_cflags=flags,
        extra_ldflags=SANITIZER_FLAGS[sanitizer],
        build_directory=build_dir,
        verbose=verbose,
    )
