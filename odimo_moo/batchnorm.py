"""BatchNorm running statistics re-estimated for the weights and mapping a model has now.

A BatchNorm's running statistics are an exponential average over the training steps, so they lag
behind weights that are still moving fast: with a few dozen steps per epoch (CPU-sized runs) a
network at 0.86 training accuracy validated at chance (full-width Darkside MobileNetV1, 900 images),
and the fine-tune's best-validation-epoch choice followed that noise. One-shot scoring re-estimates
them for each candidate mapping (:func:`recalibrate_batchnorm` under :func:`preserved_batchnorm`);
training re-estimates them before every validation (:func:`precise_batchnorm`).
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch
from torch import nn

#: Training batches on which BatchNorm statistics are re-estimated: for each one-shot candidate (the
#: one-shot strategies' default ``recalibration_batches``) and before every validation in training.
CALIBRATION_BATCHES = 8


def batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers of ``model`` that keep running statistics."""
    return [m for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@contextlib.contextmanager
def preserved_batchnorm(model: nn.Module) -> Iterator[None]:
    """Put every BatchNorm's running statistics, counter and momentum back as they were on exit."""
    saved = [(m, m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone(), m.momentum)
             for m in batchnorms(model)]
    try:
        yield
    finally:
        with torch.no_grad():
            for module, mean, var, count, momentum in saved:
                module.running_mean.copy_(mean)
                module.running_var.copy_(var)
                module.num_batches_tracked.copy_(count)
                module.momentum = momentum


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches: Sequence[torch.Tensor], device: torch.device) -> int:
    """Re-estimate every BatchNorm's running statistics on ``batches`` under the model's current
    (forced) mapping: statistics reset, then the cumulative average (momentum ``None``) over the
    batches, with only the BatchNorm layers in training mode. Leaves the model in eval mode and
    changes nothing else; returns the number of images forwarded. Wrap it in
    :func:`preserved_batchnorm` to get the previous statistics back."""
    layers = batchnorms(model)
    if not layers or not batches:
        return 0
    model.eval()
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None
        layer.train()
    images = 0
    for inputs in batches:
        model(inputs.to(device))
        images += int(inputs.shape[0])
    model.eval()
    return images


def precise_batchnorm(model: nn.Module, batches: Sequence[torch.Tensor], device: torch.device) -> int:
    """:func:`recalibrate_batchnorm`, keeping the new statistics but each BatchNorm's momentum, so
    that training goes on averaging as before. Returns the number of images forwarded."""
    momenta = [(layer, layer.momentum) for layer in batchnorms(model)]
    images = recalibrate_batchnorm(model, batches, device)
    for layer, momentum in momenta:
        layer.momentum = momentum
    return images
