"""Build pixelar: the Python package plus its compiled torch extension ``pixelar._C``.

Install without build isolation, so the extension is compiled against the torch that is
already installed (build isolation would fetch a second torch and may mismatch the ABI):

    pip install torch==2.14.1 ninja
    pip install --no-build-isolation -e .

Environment variables:
    PIXELAR_CUDA=1 / 0   force the CUDA kernels on / off (default: on when torch has CUDA
                         and nvcc is found).
    TORCH_CUDA_ARCH_LIST architectures for the CUDA build (default "8.0;9.0").
    MAX_JOBS             parallel compile jobs (ninja), honoured by torch's BuildExtension.
    DEBUG=1              -O0 -g instead of -O3.
    PIXELAR_BUILD_DIR    where object files are kept between builds (default ``build/``
                         in the source tree), so a reinstall recompiles only what changed.
    PIXELAR_CCACHE=0     do not put ccache in front of the compilers (torch does when it is
                         on PATH).
    PIXELAR_ALLOW_STATIC_LIBSTDCXX=1
                         keep a pixelar._C that links libstdc++ statically (refused by
                         default: pixelar/_link_check.py says why).
"""

import glob
import importlib.util
import os
import re
import shutil
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _cuda_home_from_nvcc():
    """Return the CUDA toolkit root behind the ``nvcc`` on PATH, or None.

    ``nvcc`` may be a small wrapper script (``exec /path/to/cuda/bin/nvcc "$@"``); torch would
    then guess CUDA_HOME as the wrapper's parent. Follow the script to the real binary.
    """
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return None
    nvcc = os.path.realpath(nvcc)
    try:
        with open(nvcc, "rb") as f:
            head = f.read(4096)
    except OSError:
        return None
    if head.startswith(b"#!"):
        match = re.search(rb"(/\S+/bin/nvcc)\b", head)
        if match is None:
            return None
        nvcc = os.path.realpath(match.group(1).decode())
    root = os.path.dirname(os.path.dirname(nvcc))
    return root if os.path.isdir(os.path.join(root, "include")) else None


if "CUDA_HOME" not in os.environ and "CUDA_PATH" not in os.environ:
    _home = _cuda_home_from_nvcc()
    if _home is not None:
        os.environ["CUDA_HOME"] = _home

import torch  # noqa: E402  (CUDA_HOME must be set before cpp_extension is imported)
from torch.utils.cpp_extension import (  # noqa: E402
    CUDA_HOME,
    BuildExtension,
    CppExtension,
    CUDAExtension,
)


def _want_cuda():
    flag = os.environ.get("PIXELAR_CUDA")
    if flag is not None:
        if flag == "1" and (torch.version.cuda is None or CUDA_HOME is None):
            sys.exit(
                "PIXELAR_CUDA=1 but torch has no CUDA or nvcc was not found "
                f"(torch.version.cuda={torch.version.cuda}, CUDA_HOME={CUDA_HOME})"
            )
        return flag == "1"
    return torch.version.cuda is not None and CUDA_HOME is not None


def _cuda_library_includes():
    """Headers of the CUDA libraries shipped in torch's ``nvidia`` wheels (cublas_v2.h ...)."""
    dirs = []
    for base in sys.path:
        dirs += glob.glob(os.path.join(base, "nvidia", "cu*", "include"))
        dirs += glob.glob(os.path.join(base, "nvidia", "*", "include"))
    return sorted({d for d in dirs if os.path.isdir(d)})


BUILD_DIR = os.environ.get("PIXELAR_BUILD_DIR", os.path.join(ROOT, "build"))


def _build_temp():
    """Persistent object-file folder: one per build flavour, so flipping PIXELAR_CUDA or DEBUG
    never reuses objects compiled with other flags. pip's editable install would otherwise
    compile into a fresh temporary folder every time (a full rebuild on every install)."""
    flavour = ("cuda" if _want_cuda() else "cpu") + (
        "-debug" if os.environ.get("DEBUG") == "1" else ""
    )
    return os.path.join(BUILD_DIR, f"temp-{flavour}-py{sys.version_info[0]}{sys.version_info[1]}")


if os.environ.get("PIXELAR_CCACHE") == "0":
    # torch's cpp_extension puts ccache (or sccache) in front of the compilers when it is on
    # PATH; this turns that off.
    os.environ["TORCH_NO_COMPILER_WRAPPER"] = "1"


class PersistentBuildExt(BuildExtension):
    """torch's BuildExtension (ninja, MAX_JOBS) with a build folder that outlives the
    install: ninja's dependency files there make a no-change reinstall a no-op and a
    one-file change recompile one file."""

    def finalize_options(self):
        super().finalize_options()
        self.build_temp = _build_temp()
        os.makedirs(self.build_temp, exist_ok=True)

    def build_extension(self, ext):
        super().build_extension(ext)
        _check_libstdcxx(self.get_ext_fullpath(ext.name))


def _check_libstdcxx(path):
    """Refuse a pixelar._C that carries its own copy of libstdc++ (pixelar/_link_check.py)."""
    spec = importlib.util.spec_from_file_location(
        "_link_check", os.path.join(ROOT, "pixelar", "_link_check.py")
    )
    link_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(link_check)
    if link_check.links_libstdcxx_dynamically(path):
        return
    if os.environ.get("PIXELAR_ALLOW_STATIC_LIBSTDCXX") == "1":
        print(f"warning: {path} links libstdc++ statically (PIXELAR_ALLOW_STATIC_LIBSTDCXX=1)")
        return
    compiler = os.environ.get("CXX", "the default C++ compiler")
    sys.exit(
        f"{path} does not load libstdc++ as a shared library: {compiler} linked the C++ "
        "standard library into it statically (a compiler wrapper that adds "
        "-static-libstdc++?). A second, exported copy of libstdc++ beside torch's crashes "
        "the process (a segmentation fault instead of the error message) when a kernel's "
        "input check formats its message. Build with the system compiler, e.g.\n"
        "    CC=/usr/bin/gcc CXX=/usr/bin/g++ pip install --no-build-isolation -e .\n"
        "or set PIXELAR_ALLOW_STATIC_LIBSTDCXX=1 to keep this build anyway."
    )


def extensions():
    debug = os.environ.get("DEBUG", "0") == "1"
    opt = ["-O0", "-g"] if debug else ["-O3"]
    cxx = opt + ["-fopenmp", "-DPy_LIMITED_API=0x03090000"]
    include_dirs = [os.path.join(ROOT, "csrc", "include")]
    sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")))
    sources += sorted(glob.glob(os.path.join("csrc", "cpu", "*.cpp")))
    if _want_cuda():
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
        sources += sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")))
        # Not --use_fast_math: it makes tanhf the approximate tanh.approx.f32 (docs/gpu.md).
        nvcc = opt + ["-ftz=true", "-prec-div=false", "-prec-sqrt=false", "-fmad=true", "-lineinfo"]
        return [
            CUDAExtension(
                "pixelar._C",
                sources,
                include_dirs=include_dirs + _cuda_library_includes(),
                extra_compile_args={"cxx": cxx, "nvcc": nvcc},
                extra_link_args=["-fopenmp"],
                py_limited_api=True,
            )
        ]
    return [
        CppExtension(
            "pixelar._C",
            sources,
            include_dirs=include_dirs,
            extra_compile_args={"cxx": cxx},
            extra_link_args=["-fopenmp"],
            py_limited_api=True,
        )
    ]


setup(
    name="pixelar",
    version="0.1.0",
    description="Autoregressive image models (PixelRNN, PixelCNN, NADE ...) with fast "
    "kernels and cached sampling for PyTorch",
    packages=find_packages(include=["pixelar", "pixelar.*"]),
    ext_modules=extensions(),
    cmdclass={"build_ext": PersistentBuildExt},
    python_requires=">=3.10",
    install_requires=["torch>=2.4", "numpy", "safetensors", "tqdm", "pillow", "scikit-learn"],
    extras_require={"test": ["pytest", "scipy"], "plot": ["matplotlib"], "lint": ["ruff==0.17.6"]},
    entry_points={"console_scripts": ["pixelar=pixelar.cli:entry_point"]},
    options={"bdist_wheel": {"py_limited_api": "cp39"}},
)
