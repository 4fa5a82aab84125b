// Every pixelar op's schema (namespace `pixelar`, the one TORCH_LIBRARY block) and the
// Python module stub for `_C`. Names and signatures are a contract: the Python ops
// (pixelar/ops/) and saved models call them.
//
// Kernels live elsewhere, one file per op and device, each registering with
// TORCH_LIBRARY_IMPL:
//   csrc/cpu/<op>.cpp   TORCH_LIBRARY_IMPL(pixelar, CPU, m)
//   csrc/cuda/<op>.cu   TORCH_LIBRARY_IMPL(pixelar, CUDA, m)
// Fake (meta) kernels and autograd are registered from Python (pixelar/ops/<op>.py).
// Shapes and semantics of each op: the docstrings in pixelar/ops/<op>.py; every file of
// each op and the checklist for adding one: docs/ops.md.
#include <Python.h>
#include <torch/library.h>

extern "C" {
// `import pixelar._C` loads this library, which runs the static registrations below.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(pixelar, m) {
  // Diagonal LSTM scan over the skewed map. x_gates: (B, 4H, R, S), S = R + W - 1;
  // w_ss: (4H, H, 2). Returns h, c: (B, H, R, S), zero outside the image.
  m.def("diagonal_lstm_scan(Tensor x_gates, Tensor w_ss) -> (Tensor, Tensor)");
  m.def("diagonal_lstm_scan_backward(Tensor grad_h, Tensor grad_c, Tensor x_gates, "
        "Tensor w_ss, Tensor h, Tensor c) -> (Tensor, Tensor)");
  // The same recurrence on the image layout (no skewed map); reverse: right to left.
  // x_gates: (B, 4H, R, W); w_ss: (4H, H, 2); bias: (4H,) added to x_gates, or None.
  // Returns h, c: (B, H, R, W) and the activated gates (B, 4H, R, W) [sigmoid i, f, o,
  // tanh g] the backward reads, all channels-last.
  m.def("diagonal_lstm_scan_image(Tensor x_gates, Tensor w_ss, bool reverse, "
        "Tensor? bias=None) -> (Tensor, Tensor, Tensor)");
  m.def("diagonal_lstm_scan_image_backward(Tensor grad_h, Tensor grad_c, Tensor x_gates, "
        "Tensor w_ss, Tensor h, Tensor c, Tensor gates, bool reverse, Tensor? bias=None) "
        "-> (Tensor, Tensor)");
  // PixelCNN's residual block, fused: ReLU, 1x1 (F -> h), ReLU, the five causal taps of a
  // masked 3x3 (h -> h), ReLU, 1x1 (h -> F), plus the input. x: (B, F, R, W);
  // w_reduce: (F, h); w_conv: (5, h, h); w_expand: (h, F). Returns out (B, F, R, W) and the
  // two ReLU outputs the backward reads, r2, r3: (B, h, R, W), all channels-last.
  m.def("conv_residual_block(Tensor x, Tensor w_reduce, Tensor b_reduce, Tensor w_conv, "
        "Tensor b_conv, Tensor w_expand, Tensor b_expand) -> (Tensor, Tensor, Tensor)");
  m.def("conv_residual_block_backward(Tensor grad_out, Tensor x, Tensor w_reduce, "
        "Tensor w_conv, Tensor w_expand, Tensor r2, Tensor r3) "
        "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  // Row LSTM scan. x_gates: (B, 4H, R, W); w_ss: (4H, H, 3). Returns h, c: (B, H, R, W).
  m.def("row_lstm_scan(Tensor x_gates, Tensor w_ss) -> (Tensor, Tensor)");
  m.def("row_lstm_scan_backward(Tensor grad_h, Tensor grad_c, Tensor x_gates, "
        "Tensor w_ss, Tensor h, Tensor c) -> (Tensor, Tensor)");
  // NADE outputs by incremental hidden update. x: (B, D); W: (Hd, D); c: (Hd,);
  // V: (D, O, Hd); b: (D, O). Returns (B, D, O).
  m.def("nade_forward(Tensor x, Tensor W, Tensor c, Tensor V, Tensor b) -> Tensor");
  // The same outputs, and the hidden-state checkpoints the backward can start from:
  // a_d at d = 0, 32, 64, ...: (ceil(D / 32), B, Hd) (pixelar/nade_checkpoints.h).
  m.def("nade_forward_checkpointed(Tensor x, Tensor W, Tensor c, Tensor V, Tensor b) "
        "-> (Tensor, Tensor)");
  // Gradients of x, W, c, V, b; checkpoints: nade_forward_checkpointed's, or None;
  // grad_x=False skips grad_x's sums and returns an empty (0,) tensor in its place.
  m.def("nade_forward_backward(Tensor grad_out, Tensor x, Tensor W, Tensor c, Tensor V, "
        "Tensor b, Tensor? checkpoints=None, bool grad_x=True) "
        "-> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  // NADE sampling, the whole loop. u: (n, D) float64; cond: (n, D) int64 or None;
  // W: (Hd, D); c: (Hd,); V: (D, 1, Hd); b: (D, 1). Returns (n, D) int64.
  m.def("nade_sample(Tensor u, Tensor? cond, Tensor W, Tensor c, Tensor V, Tensor b) -> Tensor");
  // RNADE sampling, the whole loop. u, z: (n, D) float64; V: (D, 3K, Hd); b: (D, 3K).
  // Returns (n, D) of W's dtype.
  m.def("rnade_sample(Tensor u, Tensor z, Tensor W, Tensor c, Tensor V, Tensor b, "
        "float log_scale_min, float log_scale_max) -> Tensor");
  // Cached PixelCNN / PixelRNN sampling of pixels [start, stop) in raster order, in place
  // (x and the state). layer: "conv" | "row" | "diagonal". Layouts:
  // pixelar/ops/pixel_network_sample.py.
  m.def("pixel_network_sample_step(Tensor(a!) x, Tensor(b!)[] state, Tensor u, "
        "Tensor? cond, Tensor[] weights, str layer, int levels, int start, int stop) -> ()");
}
