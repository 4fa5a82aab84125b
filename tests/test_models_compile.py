"""A whole model's forward (logits) + loss + backward runs under torch.compile(fullgraph=True)
on the C++ kernels and matches eager mode."""

import pytest
import torch

import pixelar

from conftest import cpp_built


@pytest.mark.skipif(not cpp_built(), reason="pixelar._C not built")
@pytest.mark.parametrize("layer", ["diagonal", "row"])
def test_pixelrnn_compiles_fullgraph(layer):
    torch.manual_seed(0)
    model = pixelar.models.PixelRNN(image_shape=(1, 5, 6), layer=layer, num_layers=2, hidden=4)
    x = torch.randint(0, 2, (3, 1, 5, 6))

    def loss_fn(x):
        # model.log_prob validates the values of x (data-dependent); compile what follows it
        return -pixelar.models.log_prob_from_logits(model(x), x).mean()

    with pixelar.ops.backend("cpp"):
        eager = loss_fn(x)
        eager_grads = torch.autograd.grad(eager, list(model.parameters()))
        compiled = torch.compile(loss_fn, fullgraph=True, backend="aot_eager")(x)
        grads = torch.autograd.grad(compiled, list(model.parameters()))
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)
    for g, e in zip(grads, eager_grads):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5)
