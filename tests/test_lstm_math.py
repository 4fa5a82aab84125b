"""The float math of the LSTM cells (csrc/include/pixelar/lstm_math.h, math::CellMath: a
rational tanh, sigmoid through it), compiled from the header by the C++ compiler that builds
the extension (with and without FMA), against double-precision libm on dense grids: the
error bounds the header states, |tanh| <= 1, 0 <= sigmoid <= 1, NaN through, saturation at
+-inf; the vector form the CPU samplers use (pixelar/simd.h) as the scalar one."""

import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CXX = os.environ.get("CXX", "c++")

PROGRAM = r"""
#include <cmath>
#include <cstdio>
#include <limits>
#include "pixelar/simd.h"

using pixelar::math::CellMath;

int main() {
  double tanh_err = 0, sig_err = 0, vec_diff = 0;
  bool in_range = true;
  auto check = [&](float x) {
    const float t = CellMath::tanh(x), s = CellMath::sigmoid(x);
    tanh_err = std::fmax(tanh_err, std::fabs(t - std::tanh(double(x))));
    sig_err = std::fmax(sig_err, std::fabs(s - 1.0 / (1.0 + std::exp(-double(x)))));
    in_range = in_range && std::fabs(t) <= 1.0f && s >= 0.0f && s <= 1.0f;
    using pixelar::simd::v8sf;
    const v8sf v = {x, -x, x, -x, x, -x, x, -x};
    const v8sf tv = pixelar::simd::vcell_tanh(v), sv = pixelar::simd::vcell_sigmoid(v);
    vec_diff = std::fmax(vec_diff, std::fabs(double(tv[0]) - t) + std::fabs(double(sv[0]) - s));
    vec_diff = std::fmax(vec_diff, std::fabs(double(tv[1]) + t));
  };
  for (long i = -1200000; i <= 1200000; ++i) check(float(i * 1e-5));   // [-12, 12]
  for (long i = -100000; i <= 100000; ++i) check(float(i * 1e-7));     // [-0.01, 0.01]
  for (long i = -10000; i <= 10000; ++i) check(float(i * 1e-2));      // [-100, 100]
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::printf("%.9g %.9g %.9g %d %d %d %g %g %g %g\n", tanh_err, sig_err, vec_diff, in_range,
              std::isnan(CellMath::tanh(nan)), std::isnan(CellMath::sigmoid(nan)),
              CellMath::tanh(inf), CellMath::tanh(-inf), CellMath::sigmoid(inf),
              CellMath::sigmoid(-inf));
  return 0;
}
"""


def cpu_has_avx2_fma():
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read().split()
    except OSError:
        return False
    return "avx2" in flags and "fma" in flags


@pytest.fixture(scope="module", params=["baseline", "avx2-fma"])
def results(request, tmp_path_factory):
    if shutil.which(CXX) is None:
        pytest.skip(f"no C++ compiler ({CXX})")
    # the kernels' float settings (csrc/cpu/kernel_common.h): no trapping math, contraction;
    # with -mfma the multiply-adds fuse, as in the kernels' AVX2 clones
    flags = ["-O2", "-std=c++17", "-fno-trapping-math", "-ffp-contract=fast"]
    if request.param == "avx2-fma":
        if not cpu_has_avx2_fma():
            pytest.skip("this CPU has no AVX2 + FMA")
        flags += ["-mavx2", "-mfma"]
    tmp = tmp_path_factory.mktemp("lstm_math")
    src, exe = tmp / "cell_math.cpp", tmp / "cell_math"
    src.write_text(PROGRAM)
    include = ["-I", os.path.join(ROOT, "csrc", "include")]
    subprocess.run([CXX, *flags, *include, str(src), "-o", str(exe)], check=True, timeout=120)
    fields = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout.split()
    keys = "tanh_err sig_err vec_diff in_range tanh_nan sig_nan tanh_inf tanh_minf sig_inf sig_minf"
    return dict(zip(keys.split(), map(float, fields)))


def test_error_bounds(results):
    assert 0 < results["tanh_err"] <= 4e-7  # lstm_math.h: <= 4e-7 absolute
    assert 0 < results["sig_err"] <= 2.5e-7  # lstm_math.h: <= 2.5e-7 absolute


def test_ranges_and_special_values(results):
    assert results["in_range"] == 1
    assert results["tanh_nan"] == 1 and results["sig_nan"] == 1
    assert results["tanh_inf"] == 1 and results["tanh_minf"] == -1
    assert results["sig_inf"] == 1 and results["sig_minf"] == 0


def test_vector_form_matches_scalar(results):
    # one formula; where the compiler fuses multiply-adds differently in the two forms, each
    # is still within the bound, so they differ by at most twice it
    assert results["vec_diff"] <= 8e-7
