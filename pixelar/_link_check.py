"""How a built shared object links the C++ standard library (a build-time check, setup.py).

pixelar._C must load libstdc++ as a shared library, the copy torch uses. A compiler that
links it statically (a wrapper adding -static-libstdc++) puts a second, exported copy of
libstdc++ into pixelar._C; on this project's GPU machine (2026-12-04, torch 2.11, the
image's /opt/gcc/bin/g++) the process then crashed with a segmentation fault inside
std::ostream's integer formatting whenever a kernel's input check built its error message,
instead of raising the error. setup.py refuses such a build (PIXELAR_ALLOW_STATIC_LIBSTDCXX=1
keeps it anyway).

Pure Python (no readelf): reads the ELF dynamic section's DT_NEEDED entries. Loaded by path
from setup.py, so it imports nothing of pixelar.
"""

import struct

_PT_LOAD, _PT_DYNAMIC = 1, 2
_DT_NULL, _DT_NEEDED, _DT_STRTAB = 0, 1, 5


def needed_libraries(path) -> list:
    """The DT_NEEDED entries (e.g. 'libstdc++.so.6') of the ELF64 little-endian file at
    path, in order; [] for a file with no dynamic section. ValueError for any other file."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError(f"{path}: not an ELF64 little-endian file")
    (phoff,) = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    loads, dynamic = [], None
    for i in range(phnum):
        p_type, _, offset, vaddr, _, filesz, _, _ = struct.unpack_from(
            "<IIQQQQQQ", data, phoff + i * phentsize
        )
        if p_type == _PT_LOAD:
            loads.append((vaddr, offset, filesz))
        elif p_type == _PT_DYNAMIC:
            dynamic = (offset, filesz)
    if dynamic is None:
        return []
    needed, strtab = [], None
    for pos in range(dynamic[0], dynamic[0] + dynamic[1], 16):
        tag, value = struct.unpack_from("<qQ", data, pos)
        if tag == _DT_NULL:
            break
        if tag == _DT_NEEDED:
            needed.append(value)
        elif tag == _DT_STRTAB:
            strtab = value
    if strtab is None:
        raise ValueError(f"{path}: dynamic section without a string table")
    base = next((off + strtab - va for va, off, size in loads if va <= strtab < va + size), None)
    if base is None:
        raise ValueError(f"{path}: the dynamic string table lies outside every loaded segment")
    return [data[base + v : data.index(b"\0", base + v)].decode() for v in needed]


def links_libstdcxx_dynamically(path) -> bool:
    """True when the shared object at path loads libstdc++ as a shared library."""
    return any(name.startswith("libstdc++.so") for name in needed_libraries(path))
