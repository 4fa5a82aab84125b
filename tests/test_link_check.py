"""pixelar/_link_check.py (setup.py's refusal of a pixelar._C that links libstdc++
statically) and the symptom it guards against: integers missing from the kernels' error
messages (here, with a static libstdc++, the message stopped at the first integer; on the
GPU machine of 2026-12-04 the process crashed there)."""

import shutil
import subprocess

import pytest
import torch

from pixelar import _extension
from pixelar._link_check import links_libstdcxx_dynamically, needed_libraries

needs_cxx = pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")


def _shared_object(tmp_path, *flags):
    src = tmp_path / "lib.cpp"
    src.write_text(
        "#include <sstream>\n#include <string>\n"
        'std::string fmt(long v) { std::ostringstream s; s << "v=" << v; return s.str(); }\n'
    )
    out = tmp_path / f"lib{len(flags)}.so"
    subprocess.run(["g++", "-shared", "-fPIC", *flags, str(src), "-o", str(out)], check=True)
    return out


@needs_cxx
def test_a_plain_shared_object_loads_libstdcxx(tmp_path):
    so = _shared_object(tmp_path)
    assert "libstdc++.so.6" in needed_libraries(so)
    assert links_libstdcxx_dynamically(so)


@needs_cxx
def test_a_static_libstdcxx_is_detected(tmp_path):
    so = _shared_object(tmp_path, "-static-libstdc++")
    assert not any(n.startswith("libstdc++") for n in needed_libraries(so))
    assert not links_libstdcxx_dynamically(so)


def test_not_an_elf_file(tmp_path):
    path = tmp_path / "x.so"
    path.write_bytes(b"#!/bin/sh\n")
    with pytest.raises(ValueError, match="not an ELF64"):
        needed_libraries(path)


@pytest.mark.skipif(not _extension.extension_loaded(), reason="pixelar._C is not built")
def test_the_built_extension_loads_libstdcxx_and_torch():
    import pixelar._C as ext

    needed = needed_libraries(ext.__file__)
    assert links_libstdcxx_dynamically(ext.__file__)
    assert "libc10.so" in needed


@pytest.mark.skipif(not _extension.has_kernel("row_lstm_scan", "CPU"), reason="no C++ kernel")
def test_kernel_error_messages_hold_their_integers():
    # What a second libstdc++ broke: with -static-libstdc++ this message ended at
    # "(4H, H, 3) = [" (the stream failed at its first integer).
    x = torch.randn(2, 12, 4, 5)
    w = torch.randn(12, 2, 3)  # 4H = 12 gates need H = 3, not 2
    with pytest.raises(RuntimeError) as info:
        torch.ops.pixelar.row_lstm_scan(x, w)
    message = str(info.value).splitlines()[0]
    assert "= [12, 3, 3], got (12, 2, 3)" in message, message
