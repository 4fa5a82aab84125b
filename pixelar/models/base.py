"""The base class of every image model: input checks, exact log-likelihood, and sampling.

Images are integer tensors (B, C, H, W) with values in [0, levels). The order of the
dimensions is raster order over (row, column), and channel 0, 1, 2 inside a pixel.
"""

import itertools
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ops.draw import check_finite_logits, draw

INTEGER_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


def is_int(value) -> bool:
    """An int that is not a bool (True would pass as 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_positive_int(name, value):
    if not is_int(value) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def check_image_shape(image_shape):
    if (
        not isinstance(image_shape, (tuple, list))
        or len(image_shape) != 3
        or not all(is_int(s) and s > 0 for s in image_shape)
    ):
        raise ValueError(f"image_shape must be (C, H, W) with positive ints, got {image_shape!r}")
    return tuple(image_shape)


def check_levels(levels):
    if not is_int(levels) or levels < 2:
        raise ValueError(f"levels must be an int >= 2, got {levels!r}")
    return levels


def memory_limit() -> int:
    """Bytes a model may take when built: this machine's physical memory (64 GiB where it
    cannot be read). Constructors refuse larger requests before allocating anything."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return 64 * 2**30


def check_sample_size(n, num_dims):
    """ValueError if n samples of num_dims dimensions need more than memory_limit(): their
    float64 uniforms and int64 (or float) values, 16 bytes a dimension."""
    nbytes = 16 * n * num_dims
    if nbytes > memory_limit():
        raise ValueError(
            f"n={n:,} samples of {num_dims:,} dimensions need "
            f"{nbytes / 2**30:,.1f} GiB (uniforms and values), more than this "
            f"machine's memory ({memory_limit() / 2**30:,.1f} GiB); draw fewer "
            f"at a time"
        )


def check_model_size(model_name, nbytes, what):
    """ValueError if building a model needs more than ``memory_limit()`` bytes.

    nbytes: the bytes its parameters (and buffers) would take in float32 (a lower bound
    will do); what: the arguments that ask for them, in words.
    """
    limit = memory_limit()
    if nbytes > limit:
        raise ValueError(
            f"{model_name}: {what} needs {nbytes / 2**30:,.1f} GiB for its "
            f"parameters (float32), more than this machine's memory "
            f"({limit / 2**30:,.1f} GiB); choose smaller sizes"
        )


def check_images(x, image_shape, levels, name="x", allow_negative=False):
    """Validate an image batch and return it as int64.

    x: (B, C, H, W) integer tensor with values in [0, levels) (negative values also allowed
    when ``allow_negative``, as in a sampling condition). Raises ValueError naming ``name``.
    """
    if not isinstance(x, torch.Tensor):
        raise ValueError(
            f"{name} must be a torch.Tensor of shape (B, C, H, W), got {type(x).__name__}"
        )
    if x.device.type == "meta":
        raise ValueError(
            f"{name} is on the meta device (shapes without values); give "
            f"images on the model's device"
        )
    if x.dtype not in INTEGER_DTYPES:
        raise ValueError(
            f"{name} must be an integer tensor (int64 or uint8) with values in "
            f"[0, {levels}), got dtype {x.dtype}"
        )
    if x.dim() != 4:
        raise ValueError(
            f"{name} must have shape (B, C, H, W) = (B, {', '.join(map(str, image_shape))}), "
            f"got {x.dim()} dimensions {tuple(x.shape)}"
        )
    if tuple(x.shape[1:]) != tuple(image_shape):
        raise ValueError(
            f"{name} must have shape (B, {', '.join(map(str, image_shape))}), got {tuple(x.shape)}"
        )
    x = x.long()
    # value ranges are data-dependent: checked in eager mode, skipped inside torch.compile
    # (a compiled model(x) takes what log_prob validated)
    if x.numel() and not torch.compiler.is_compiling():
        lo, hi = torch.stack(torch.aminmax(x)).tolist()  # one device sync
        if hi >= levels or (lo < 0 and not allow_negative):
            allowed = f"[0, {levels})" if not allow_negative else f"< {levels} (negative: sample)"
            raise ValueError(f"{name} values must be {allowed}, got values in [{lo}, {hi}]")
    return x


class _BernoulliLogProb(torch.autograd.Function):
    """sum_d log p(x_d | l_d) of binary x under Bernoulli logits l: (B, ...) and (B, ...) of
    one float dtype -> (B,). Per dimension x l - softplus(l), with softplus(l) = max(l, 0) -
    log(sigmoid(|l|)) (sigmoid(|l|) lies in [1/2, 1]: no underflow, and an absolute error of
    an ulp of 1 at most). Written so because on this project's CPU torch 2.14's log1p,
    log_sigmoid and softplus (and so binary_cross_entropy_with_logits) take 7-8x the time of
    its exp, log or sigmoid on the same tensor. The backward is the analytic one,
    grad (x - sigmoid(l)), instead of a node per operation. torch.func transforms (vmap,
    grad) and double backward work as they did through the cross-entropy."""

    generate_vmap_rule = True

    @staticmethod
    def forward(logits, x):
        ll = x * logits - logits.clamp_min(0) + torch.log(torch.sigmoid(logits.abs()))
        return ll.flatten(1).sum(dim=1)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(ctx, grad):
        logits, x = ctx.saved_tensors
        g = grad.reshape(-1, *([1] * (logits.dim() - 1)))
        grad_logits = (x - torch.sigmoid(logits)) * g if ctx.needs_input_grad[0] else None
        grad_x = logits * g if ctx.needs_input_grad[1] else None
        return grad_logits, grad_x


def bernoulli_log_prob(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Log-probability in nats of binary values x under Bernoulli logits (of value 1), summed
    over every dimension but the first: (B, ...) logits, (B, ...) x -> (B,)."""
    return _BernoulliLogProb.apply(logits, x.to(logits.dtype))


def log_prob_from_logits(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Exact log-probability in nats of images x (B, C, H, W) under per-dimension logits:
    (B, C, H, W) Bernoulli logits of value 1, or (B, C, H, W, L) categorical logits -> (B,)."""
    if logits.dim() == x.dim():
        return bernoulli_log_prob(logits, x)
    ll = torch.gather(F.log_softmax(logits, dim=-1), -1, x.unsqueeze(-1)).squeeze(-1)
    return ll.flatten(1).sum(dim=1)


class AutoregressiveModel(nn.Module):
    """Base class: p(x) = prod_i p(x_i | x_<i) over (row, column, channel) in raster order.

    Subclasses implement ``forward(x) -> logits``: (B, C, H, W, levels), or (B, C, H, W)
    Bernoulli logits when ``self.bernoulli`` (that is, when levels == 2); the logits of a
    dimension may depend only on earlier dimensions. A subclass with a cached sampler
    overrides ``_sample_fast``.
    """

    def __init__(self, image_shape, levels):
        super().__init__()
        self.image_shape = check_image_shape(image_shape)
        self.levels = check_levels(levels)

    @property
    def bernoulli(self) -> bool:
        """True for binary models (levels == 2): forward returns one Bernoulli logit (of
        value 1) per dimension, (B, C, H, W), instead of (B, C, H, W, levels) logits.
        Derived from ``levels``, so the two cannot disagree."""
        return self.levels == 2

    def check_size(self, nbytes, what):
        """Refuse (ValueError naming ``what``) before allocating more than memory_limit()."""
        check_model_size(type(self).__name__, nbytes, what)

    @property
    def num_dims(self) -> int:
        C, H, W = self.image_shape
        return C * H * W

    def config(self) -> dict:
        """The constructor's keyword arguments (JSON-serialisable), for checkpoints."""
        return dict(self._config)

    def _param_like(self):
        p = next(self.parameters(), None)
        return (
            (p.dtype, p.device)
            if p is not None
            else (torch.get_default_dtype(), torch.device("cpu"))
        )

    def to_input(self, x: torch.Tensor) -> torch.Tensor:
        """Integer images (B, C, H, W) -> floats in [0, 1] of the parameters' dtype and device."""
        dtype, device = self._param_like()
        return x.to(device=device, dtype=dtype) / (self.levels - 1)

    def check_images(self, x, name="x"):
        return check_images(x, self.image_shape, self.levels, name)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log-probability of images x: (B, C, H, W) integers -> (B,) nats."""
        x = self.check_images(x)
        return log_prob_from_logits(self(x), x.to(self._param_like()[1]))

    def _draw_uniforms(self, n, generator):
        device = self._param_like()[1]
        return torch.rand(
            (n, *self.image_shape), generator=generator, device=device, dtype=torch.float64
        )

    def _check_condition(self, n, condition):
        if condition is None:
            return None
        cond = check_images(
            condition, self.image_shape, self.levels, name="condition", allow_negative=True
        )
        if cond.shape[0] != n:
            raise ValueError(
                f"condition must have shape ({n}, {', '.join(map(str, self.image_shape))}) "
                f"for n={n}, got {tuple(cond.shape)}"
            )
        return cond.to(self._param_like()[1])

    @torch.no_grad()
    def sample(
        self, n: int, *, fast: bool = True, generator=None, condition=None, progress: bool = False
    ) -> torch.Tensor:
        """Draw n images: (n, C, H, W) int64.

        fast: use the cached O(pixels) sampler (False: one full forward pass per dimension).
        generator: a torch.Generator on the model's device; with generators seeded alike,
            fast and naive sampling return identical images (all uniforms are drawn first,
            one per dimension, as ``torch.rand((n, C, H, W), dtype=float64)``).
        condition: (n, C, H, W) integers; negative entries are sampled, the others kept.
        progress: show a progress bar over the dimensions.
        """
        check_positive_int("n", n)
        for name, flag in (("fast", fast), ("progress", progress)):
            if not isinstance(flag, bool):
                raise ValueError(f"{name} must be True or False, got {flag!r}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ValueError(
                f"generator must be a torch.Generator or None, got {type(generator).__name__}"
            )
        check_sample_size(n, self.num_dims)
        cond = self._check_condition(n, condition)
        u = self._draw_uniforms(n, generator)
        was_training = self.training
        # eval() and train() set every submodule: skipped when all are in eval mode already
        switch = any(m.training for m in self.modules())
        if switch:
            self.eval()
        try:
            if fast:
                return self._sample_fast(u, cond, progress)
            return self._sample_naive(u, cond, progress)
        finally:
            if switch:
                self.train(was_training)

    def _sample_naive(self, u, cond, progress=False):
        """One full forward pass per dimension. u: (n, C, H, W) float64 uniforms."""
        n = u.shape[0]
        C, H, W = self.image_shape
        x = torch.zeros((n, C, H, W), dtype=torch.long, device=u.device)
        if cond is not None:
            x = torch.where(cond >= 0, cond, x)
        for r, c, ch in _progress(
            itertools.product(range(H), range(W), range(C)),
            self.num_dims,
            progress,
            "naive sampling",
        ):
            if cond is not None and bool((cond[:, ch, r, c] >= 0).all()):
                continue
            logits = self(x)[:, ch, r, c]
            check_finite_logits(
                logits,
                self.bernoulli,
                (r * W + c) * C + ch,
                None if cond is None else cond[:, ch, r, c] < 0,
            )
            value = draw(logits, u[:, ch, r, c], self.bernoulli)
            if cond is not None:
                value = torch.where(cond[:, ch, r, c] >= 0, cond[:, ch, r, c], value)
            x[:, ch, r, c] = value
        return x

    def _sample_fast(self, u, cond, progress=False):
        """Cached sampler; models without one use the naive sampler."""
        return self._sample_naive(u, cond, progress)


def _progress(iterable, total, enabled, desc):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="dim")
