"""The integer path between exported sub-layers (odimo_moo.integer_requantization) on small networks
whose pooling does or does not have a shift form."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from odimo_moo.errors import UsageError
from odimo_moo.export_formats import qdq_onnx_model
from odimo_moo.integer_requantization import compare_requantization
from odimo_moo.searchable import ODiMO

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


class _Pooled(nn.Module):
    """Conv -> ReLU -> a searched 3x3 conv -> ReLU, added to its input (a residual) -> ReLU ->
    global average pooling -> classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        x = torch.relu(torch.relu(self.conv(x)) + x)
        return self.fc(torch.flatten(self.pool(x), 1))


def _report(socs, size: int) -> dict:
    torch.manual_seed(0)
    model = ODiMO(_Pooled(), socs["darkside"], (1, size, size), init="balanced", deploy_format=True)
    inputs = torch.randn(16, 1, size, size)
    model.train()
    model(inputs)
    model.eval()
    model.freeze_mapping()
    onnx_model = qdq_onnx_model(model.export().eval(), inputs[:1], model.soc.unit_names)
    return compare_requantization(onnx_model, inputs)


@pytest.mark.parametrize("size", [4, 3], ids=["pool-over-16", "pool-over-9"])
def test_requantization_follows_residual_adds_and_power_of_two_pooling(socs, size):
    """Every sub-layer input after the first is compared and equal, through the residual add and the
    concatenation of the searched layer's two units; the classifier's input only where the pooling
    counts a power of two of positions (a shift), not over 3x3."""
    report = _report(socs, size)
    assert ("stem", "cluster") not in report  # it reads the image
    assert {"conv"} <= {layer for layer, _ in report}
    assert ("fc", "cluster") in report if size == 4 else ("fc", "cluster") not in report
    paths = {numbers["path"] for numbers in report.values()}
    assert "Relu" in paths
    if size == 4:
        assert "Flatten<GlobalAveragePool<Relu<Add<Relu<Concat" in paths
    for key, numbers in report.items():
        assert numbers["elements"] > 0 and numbers["equal"] == 1.0, key


def test_power_of_two_exponent_by_hand():
    from odimo_moo.integer_reference import power_of_two_exponent, requantization_shift

    assert [power_of_two_exponent(v) for v in (1.0, 0.25, 2.0 ** -20, 64, 3.0, 0.1, 1 / 255)] == [
        0, -2, -20, 6, None, None, None]
    assert requantization_shift(2.0 ** -12, 2.0 ** -7) == 5
    with pytest.raises(UsageError, match="not a power of two"):
        requantization_shift(2.0 ** -12, 1 / 255)
