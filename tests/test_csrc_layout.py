"""The layout of csrc/ that docs/ops.md promises (issue 13): every schema in csrc/pixelar.cpp,
one kernel file per op and device (csrc/cpu/<op>.cpp, csrc/cuda/<op>.cu) registering with
TORCH_LIBRARY_IMPL, the CUDA registrations hidden from the host emulation, one inline macro,
no dead -D flag in setup.py, and a docs/ops.md section per op. Reads the sources only."""

import glob
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CSRC = os.path.join(ROOT, "csrc")


def read(path):
    with open(path) as f:
        return f.read()


def code(text):
    """text without its // comments."""
    return re.sub(r"//[^\n]*", "", text)


def sources():
    """Every C++ / CUDA source and header under csrc/ (comments removed), by path relative
    to csrc/."""
    out = {}
    for path in glob.glob(os.path.join(CSRC, "**", "*"), recursive=True):
        if os.path.isfile(path) and path.endswith((".cpp", ".h", ".cu", ".cuh")):
            out[os.path.relpath(path, CSRC)] = code(read(path))
    return out


def schema_ops():
    return re.findall(r'm\.def\("(\w+)\(', read(os.path.join(CSRC, "pixelar.cpp")))


def kernel_files(device):
    ext = {"cpu": ".cpp", "cuda": ".cu"}[device]
    return sorted(glob.glob(os.path.join(CSRC, device, "*" + ext)))


def test_every_schema_is_in_pixelar_cpp():
    ops = schema_ops()
    assert len(ops) == len(set(ops)) and "pixel_network_sample_step" in ops, ops
    for rel, text in sources().items():
        if rel == "pixelar.cpp":
            assert len(re.findall(r"\bTORCH_LIBRARY\(", text)) == 1
            assert "TORCH_LIBRARY_IMPL" not in text
            continue
        assert not re.search(r"\bTORCH_LIBRARY(_FRAGMENT)?\(", text), rel
        assert "m.def(" not in text, rel


def test_one_kernel_file_per_op_and_device():
    ops = set(schema_ops())
    for device in ("cpu", "cuda"):
        registered = {}
        for path in kernel_files(device):
            text = code(read(path))
            stem = os.path.splitext(os.path.basename(path))[0]
            assert text.count(f"TORCH_LIBRARY_IMPL(pixelar, {device.upper()}, m)") == 1, path
            names = re.findall(r'm\.impl\("(\w+)"', text)
            assert names, path
            for name in names:
                assert name in ops, (path, name)
                assert stem in name, (path, name)  # the file is named after its op
                assert name not in registered, (name, path, registered.get(name))
                registered[name] = path
        assert set(registered) == ops, (device, sorted(ops - set(registered)))


def test_cuda_registrations_are_hidden_from_the_emulation():
    # tests/cuda_emulation/emulated_kernels.cpp includes every csrc/cuda/<op>.cu; the
    # registration (and cuda_device.cuh, nvcc only) must be compiled out there
    emulated = read(os.path.join(ROOT, "tests", "cuda_emulation", "emulated_kernels.cpp"))
    for path in kernel_files("cuda"):
        text = code(read(path))
        name = os.path.basename(path)
        assert f'#include "{name}"' in emulated, name
        guarded = re.findall(r"#if !defined\(PIXELAR_CUDA_EMULATION\)(.*?)#endif", text, re.S)
        assert any("TORCH_LIBRARY_IMPL" in g for g in guarded), name
        assert any('#include "cuda_device.cuh"' in g for g in guarded), name
        outside = re.sub(r"#if !defined\(PIXELAR_CUDA_EMULATION\).*?#endif", "", text, flags=re.S)
        assert "TORCH_LIBRARY_IMPL" not in outside and "cuda_device.cuh" not in outside, name


def test_one_inline_macro():
    defines = [
        (rel, m)
        for rel, text in sources().items()
        for m in re.findall(r"#define (PIXELAR_\w*(?:INLINE|_HD)\w*)", text)
    ]
    assert defines == [("include/pixelar/inline.h", "PIXELAR_HOST_DEVICE_INLINE")] * 3, defines


def test_setup_defines_only_macros_the_sources_read():
    setup = read(os.path.join(ROOT, "setup.py"))
    text = "\n".join(sources().values())
    for name in set(re.findall(r'"-D(\w+)', setup)) - {"Py_LIMITED_API"}:
        assert re.search(rf"\b{name}\b", text), f"setup.py defines {name}, which no source reads"


def test_docs_ops_has_a_section_per_op():
    doc = read(os.path.join(ROOT, "docs", "ops.md"))
    assert "docs/ops.md" in read(os.path.join(CSRC, "pixelar.cpp"))
    for device in ("cpu", "cuda"):
        for path in kernel_files(device):
            stem = os.path.splitext(os.path.basename(path))[0]
            assert re.search(rf"^## {stem}\b", doc, re.M), stem
            assert f"csrc/{device}/{os.path.basename(path)}" in doc, path
