"""The polish after ODiMO's search: a whole layer moved onto one unit only where that lowers the search's
objective (task loss + lambda * ln(cost / reference)), only cheaper candidates scored, and the
``polish`` parameter of the odimo strategy writing ``polish.json``."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from odimo_moo.batchnorm import preserved_batchnorm, recalibrate_batchnorm
from odimo_moo.cli import main
from odimo_moo.mapping_polish import fixed_batches, network_cost, polish_mapping, task_loss
from odimo_moo.registry import PluginRegistry
from odimo_moo.searchable import ODiMO

from test_reliability_inputs import check_clean_error
from test_search_cli import TINY


class FirstLayerNet(nn.Module):
    """ResNet-20's first layer on DIANA (3->16, 3x3, 32x32: cost not convex in its split), then a head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(torch.relu(self.bn(self.conv(x)))), 1))


def searchable(socs, quantize: bool) -> ODiMO:
    torch.manual_seed(0)
    net = FirstLayerNet()
    with torch.no_grad():
        net.fc.weight.mul_(20.0)  # confident logits: a changed mapping changes the loss visibly
    return ODiMO(net, socs["diana"], (3, 32, 32), metric="energy", quantize=quantize, exclude=[nn.Linear])


def random_batches(count: int = 2, size: int = 16) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    return [(torch.randn(size, 3, 32, 32, generator=generator), torch.randint(0, 10, (size,), generator=generator))
            for _ in range(count)]


def units_of(model: ODiMO) -> list[str]:
    return [model.soc.units[int(u)].name for u in model.split_layer("conv").fixed_units.tolist()]


def test_a_split_layer_moves_whole_onto_the_cheapest_unit_when_the_loss_does_not_care(socs):
    model = searchable(socs, quantize=False)  # float everywhere: every mapping computes the same
    model.force_mapping({"conv": ["digital"] + ["analog"] * 15})
    model.train()
    weights = {k: v.clone() for k, v in model.state_dict().items() if "fixed_units" not in k}
    report = polish_mapping(model, random_batches(), lambda_=3.0)
    assert units_of(model) == ["digital"] * 16
    assert model.training and all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items())
    assert [(c.unit, c.score is not None, c.taken) for c in report.candidates] == [
        ("digital", True, True), ("analog", True, False)]  # both cheaper than the split, the cheapest taken
    assert report.loss_evaluations == 3  # the two candidates, then the start
    (move,) = report.moves
    assert (move.layer, move.before, move.unit) == ("conv", {"digital": 1, "analog": 15}, "digital")
    assert move.cost_after == report.end_cost < report.start_cost == move.cost_before
    assert move.loss_after == pytest.approx(move.loss_before, abs=1e-5)
    assert move.objective_before - move.objective_after == pytest.approx(
        3.0 * math.log(move.cost_before / move.cost_after), abs=1e-5)
    assert json.loads(json.dumps(report.to_dict()))["moves"][0]["unit"] == "digital"


def test_no_loss_is_measured_when_no_move_lowers_the_cost(socs):
    model = searchable(socs, quantize=False)
    model.force_mapping({"conv": ["digital"] * 16})  # already the cheapest
    report = polish_mapping(model, random_batches(), lambda_=3.0)
    assert units_of(model) == ["digital"] * 16 and report.moves == []
    assert [(c.unit, c.score) for c in report.candidates] == [("analog", None)]
    assert report.loss_evaluations == 0 and report.start is None and report.end is None


class Augmented(torch.utils.data.Dataset):
    """Examples whose input is drawn from the global random stream at every read, like random crops."""

    def __len__(self) -> int:
        return 10

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return torch.rand(2) + index, index


def test_the_scoring_batches_are_the_same_for_a_seed_and_leave_the_global_random_stream_alone():
    torch.manual_seed(5)
    untouched = torch.rand(3)
    torch.manual_seed(5)
    first = fixed_batches(Augmented(), 2, 4, seed=3)
    assert torch.equal(torch.rand(3), untouched)
    again = fixed_batches(Augmented(), 2, 4, seed=3)
    assert [t.shape[0] for _, t in first] == [4, 4]
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again))
    assert not torch.equal(fixed_batches(Augmented(), 2, 4, seed=4)[0][0], first[0][0])


def log_softmax_under(model: ODiMO, unit: str, inputs: torch.Tensor) -> torch.Tensor:
    model.force_mapping({"conv": [unit] * 16})
    model.eval()
    with torch.no_grad(), preserved_batchnorm(model):
        recalibrate_batchnorm(model, [inputs], torch.device("cpu"))
        return torch.log_softmax(model(inputs), dim=1)


def test_a_move_is_refused_when_its_loss_rises_more_than_lambda_prices_its_saving(socs):
    model = searchable(socs, quantize=True)  # 8-bit digital, ternary analog: the outputs differ
    inputs = random_batches(1, 32)[0][0]
    # labels on which all-digital (the cheaper) is worse than all-analog, sample by sample
    gap = log_softmax_under(model, "analog", inputs) - log_softmax_under(model, "digital", inputs)
    labels = gap.argmax(dim=1)
    batches = [(inputs, labels)]
    rise = task_loss(model, batches, torch.device("cpu"))  # all-digital now
    model.force_mapping({"conv": ["analog"] * 16})
    rise -= task_loss(model, batches, torch.device("cpu"))
    analog_cost = network_cost(model)
    model.force_mapping({"conv": ["digital"] * 16})
    saving = math.log(analog_cost / network_cost(model))
    assert rise > 0.05 and saving > 0.1, (rise, saving)
    batchnorm = model.model.get_submodule("bn")
    statistics = batchnorm.running_mean.clone()
    for lambda_, moved in ((0.5 * rise / saving, False), (2.0 * rise / saving, True)):
        model.force_mapping({"conv": ["analog"] * 16})
        report = polish_mapping(model, batches, lambda_)
        assert units_of(model) == ["digital" if moved else "analog"] * 16, lambda_
        assert [c.taken for c in report.candidates] == [moved] and len(report.moves) == int(moved)
        assert report.end.objective == pytest.approx(
            report.start.objective - (lambda_ * saving - rise if moved else 0.0), abs=1e-5)
    assert torch.equal(batchnorm.running_mean, statistics)  # BatchNorm statistics put back


@pytest.mark.parametrize("start", ["search", "warmup"])
def test_odimo_search_with_polish_writes_what_it_tried_and_moved(tmp_path, capsys, start):
    out = tmp_path / "out"
    assert main(["search", *TINY, "--metric", "energy", "--lambda", "3", "--set", "polish=true",
                 "--set", f"finetune_from={start}", "--out", str(out)]) == 0
    capsys.readouterr()
    report = json.loads((out / "polish.json").read_text())
    assert report["lambda"] == 3.0 and report["metric"] == "energy" and report["candidates"] and report["moves"]
    assert report["images"] > 0
    result = json.loads((out / "result.json").read_text())
    assert result["params"]["polish"] is True
    for move in report["moves"]:  # the fine-tuned network keeps every move
        assert set(result["channel_split"][move["layer"]].values()) <= {0, sum(move["before"].values())}
        assert result["channel_split"][move["layer"]][move["unit"]] == sum(move["before"].values())


def test_polish_is_an_odimo_parameter_off_by_default_and_checked(tmp_path, capsys):
    assert PluginRegistry.load(()).strategies()["odimo"].obj.defaults()["polish"] is False
    check_clean_error(capsys, ["search", *TINY, "--set", "polish=maybe", "--out", str(tmp_path / "a")], 2,
                      "polish must be true or false, got 'maybe'")
    check_clean_error(capsys, ["search", *TINY, "--set", "polish=true", "--target", "latency_cycles=20000",
                               "--out", str(tmp_path / "b")], 2, "polish=true needs a search at a fixed lambda")
