"""Markdown results of ``odimo compare``: one section per comparison, next to the paper's claims.

``odimo compare ... --results-md docs/RESULTS.md`` (also with ``--from``) writes or replaces the
section of one comparison, delimited by ``<!-- odimo-compare: KEY -->`` and
``<!-- /odimo-compare: KEY -->`` so that re-running updates it in place and other sections (and any
text around them) are kept. A section holds what the run was (command, machine, setup, seeds,
epochs, budgets), the hypervolume per method (mean, spread), per heuristic the cost reduction at
iso-accuracy and the accuracy change at iso-cost, which differences separate from the seed noise,
each method's fronts, and the paper's claim for the SoC.
"""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path
from typing import Any, Mapping

from .checkpoint import atomic_write_bytes
from .compare import baseline_points, oneshot_lines, separation_lines, spread_text

#: What the paper (Risso et al., IEEE TCAD 2025) claims per SoC, quoted next to the measured numbers.
PAPER_CLAIMS = {
    "darkside": "Darkside, MobileNetV1 (CIFAR-10/100, ImageNet): up to ~8x lower latency at iso-accuracy than "
                "the all-cluster mapping; up to 50.8x lower energy at < 0.3 % accuracy drop.",
    "diana": "DIANA, ResNet-20 / ResNet-18 (CIFAR-10/100, ImageNet): ~30 % lower latency and energy "
             "(up to 31 % / 33 %) at < 0.6 % accuracy drop (-0.32 % / -0.53 %) against the manual mappings.",
}


def machine(device: str = "cpu") -> dict[str, Any]:
    """The machine a comparison runs on: CPU model (``/proc/cpuinfo``), cores, torch, device."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__,
                            "torch_threads": torch.get_num_threads(), "device": device}
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def section_key(run: Mapping[str, Any], report: Mapping[str, Any]) -> str:
    """The section's key: the comparison's title made a slug."""
    return re.sub(r"[^a-z0-9]+", "-", section_title(run, report).lower()).strip("-")


def section_title(run: Mapping[str, Any], report: Mapping[str, Any]) -> str:
    """The run's title, else "SoC model on dataset, metric" from the run record."""
    if run.get("title"):
        return str(run["title"])
    setup = run.get("setup", {})
    parts = [setup.get("soc"), setup.get("model")]
    where = f" on {setup['dataset']}" if setup.get("dataset") else ""
    return f"{' '.join(p for p in parts if p) or 'comparison'}{where}, {report['metric']}"


def results_section(report: Mapping[str, Any], run: Mapping[str, Any], sources: list[str]) -> str:
    """The markdown section of one comparison (``run``: the ``compare-run.json`` record, may be empty)."""
    claim = PAPER_CLAIMS.get(str(run.get("setup", {}).get("soc", "")))
    notes = [*separation_lines(report, digits=4), *oneshot_lines(report, digits=4, targeted_only=True)]
    lines = [f"### {section_title(run, report)}", "", *_run_lines(report, run, sources), *_methods_table(report),
             *_baselines_table(report), "", f"Separation rule: {report['separation_rule']}", "",
             *[f"- {line}" for line in notes], *_front_lines(report), "",
             f"Paper's claim: {claim}" if claim else "Paper's claim: none recorded for this SoC.", ""]
    return "\n".join(lines)


def _run_lines(report: Mapping[str, Any], run: Mapping[str, Any], sources: list[str]) -> list[str]:
    """What the run was: command, files, machine, setup, recipes, lambdas, seeds, budgets, warmup."""
    setup = run.get("setup", {})
    command = run.get("command")
    lines = [f"- command: `{command}`" if command else "- command: not recorded",
             f"- results: {', '.join(f'`{s}`' for s in sources)} (compare.json, compare.csv, compare.png)"]
    info = run.get("machine")
    if info:
        lines.append(f"- machine: {info.get('cpu')}, {info.get('cores')} cores, torch {info.get('torch')} "
                     f"({info.get('torch_threads')} threads), device {info.get('device')}"
                     + (f" ({info['gpu']})" if info.get("gpu") else ""))
    if setup:
        lines.append("- setup: " + ", ".join(f"{k}={setup[k]}" for k in sorted(setup)))
    for method, recipe in run.get("recipes", {}).items():
        lines.append(f"- {method}: warmup {recipe.get('warmup_epochs')}, search {recipe.get('search_epochs')}, "
                     f"fine-tune {recipe.get('finetune_epochs')} epochs, batch {recipe.get('batch_size')}, "
                     f"lr {recipe.get('lr')} ({recipe.get('lr_schedule')})")
    if run.get("lambdas") is not None:
        lines.append(f"- lambdas: {', '.join(f'{v:g}' for v in run['lambdas'])}; budget: {run.get('budget', 'fixed')}"
                     + ("" if not run.get("params") else f"; parameters: {run['params']}"))
    lines.append(f"- seeds: {', '.join(report['seeds'])}; accuracy: {report['accuracy']}")
    for seed, methods in report.get("budget", {}).get("per_seed", {}).items():
        for method, budget in methods.items():
            clock = budget.get("clock", "wall")  # records before the CPU clock: wall time
            spent = budget.get("odimo_seconds", budget.get("odimo_wall_s", 0.0))
            lines.append(f"- at equal compute (--budget matched), seed {seed}: {method} trains {budget['points']} "
                         f"points x {budget['epochs_per_point']} epochs (ODiMO: {budget['odimo_train_epochs']} "
                         f"epochs) and searches one-shot for {budget['params']['max_seconds']:.1f} s {clock} "
                         f"(ODiMO's {spent:.1f} s {clock} minus the expected training time)")
    warmup = report["warmup"]["mean_per_seed"]
    if warmup:
        lines.append(f"- warmup (shared by every method, once per seed, not in their compute): {warmup['epochs']:.0f} "
                     f"epochs, {warmup['wall_s']:.1f} s wall, {warmup['cpu_s']:.1f} s CPU per seed")
    return lines


def _methods_table(report: Mapping[str, Any]) -> list[str]:
    """Hypervolume and compute per method."""
    lines = ["", f"Hypervolume: reference point {report['reference_point']['text']}, the same for every seed and "
                 "method; mean ± sample standard deviation [min, max] over seeds. Compute per seed (mean): "
                 "epochs trained after the warmup, one-shot mappings scored and images forwarded, wall and "
                 "CPU seconds.", "",
             "| method | seeds | hypervolume | HV fraction | best accuracy | epochs | one-shot mappings | "
             "one-shot images | wall s | CPU s |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in report["methods"]:
        compute = row["compute"]
        volume = spread_text(row["hypervolume"], row["hypervolume_std"], row["hypervolume_min"],
                             row["hypervolume_max"], len(row["seeds"]), digits=5)
        lines.append(f"| {row['method']} | {len(row['seeds'])} | {volume} | {row['hypervolume_fraction']:.4f} | "
                     f"{row['best_accuracy']:.4f} | {compute['train_epochs']:.0f} | "
                     f"{compute['oneshot_evaluations']:.0f} | {compute['oneshot_images']:.0f} | "
                     f"{compute['wall_s']:.1f} | {compute['cpu_s']:.1f} |")
    return lines


def _baselines_table(report: Mapping[str, Any]) -> list[str]:
    """Per heuristic and method: cost reduction at iso-accuracy, accuracy change at iso-cost."""
    cost = report["cost_field"]
    baselines = baseline_points(report)
    if not baselines:
        return []
    lines = ["", "Against each heuristic point of the same seed (mean ± std [min, max] over seeds): cost "
                 "reduction at iso-accuracy = heuristic cost / the method's lowest cost at an accuracy >= the "
                 "heuristic's; accuracy change at iso-cost = the method's best accuracy at a cost <= the "
                 "heuristic's minus the heuristic's accuracy (percentage points).", "",
             f"| method | heuristic | heuristic accuracy | heuristic {cost} | cost reduction at iso-accuracy | "
             f"accuracy change at iso-cost [pp] |", "|---|---|---:|---:|---|---|"]
    for name, (points, accuracy) in baselines.items():
        for row in report["methods"]:
            iso = row["vs_baselines"].get(name)
            if iso is not None:
                lines.append(f"| {row['method']} | {name} | {accuracy:.4f} | {points[0][cost]:.5g} | "
                             f"{_iso_ratio(iso)} | {_iso_gain(iso)} |")
    return lines


def _iso_ratio(iso: Mapping[str, Any]) -> str:
    ratio = spread_text(iso["iso_accuracy_cost_ratio"], iso["iso_accuracy_cost_ratio_std"],
                        iso["iso_accuracy_cost_ratio_min"], iso["iso_accuracy_cost_ratio_max"], iso["seeds"],
                        digits=3, unit="x")
    missing = iso["iso_accuracy_cost_ratio_missing"]
    return ratio + (f" (none as accurate in {missing} seed(s))" if missing else "")


def _iso_gain(iso: Mapping[str, Any]) -> str:
    gain = spread_text(iso["iso_cost_accuracy_gain"], iso["iso_cost_accuracy_gain_std"],
                       iso["iso_cost_accuracy_gain_min"], iso["iso_cost_accuracy_gain_max"], iso["seeds"],
                       digits=3, scale=100)
    missing = iso["iso_cost_accuracy_gain_missing"]
    return gain + (f" (none as cheap in {missing} seed(s))" if missing else "")


def _front_lines(report: Mapping[str, Any]) -> list[str]:
    """Each method's median front and per-seed fronts."""
    cost = report["cost_field"]
    lines = ["", f"Fronts ({report['median_front']}; per seed: the non-dominated points, accuracy @ {cost}):", ""]
    for row in report["methods"]:
        median = ", ".join(f"{p['accuracy']:.4f} @ {p[cost]:.4g}" for p in row["median_front"])
        lines.append(f"- **{row['method']}** median: {median}")
        for seed, seed_row in row["per_seed"].items():
            front = ", ".join(f"{p['accuracy']:.4f} @ {p[cost]:.4g}" for p in seed_row["front"])
            lines.append(f"  - seed {seed}: {front}")
    return lines


def update_results_file(path: Path, key: str, section: str) -> None:
    """Write ``section`` into the markdown file ``path`` between the markers of ``key``: replacing
    the section of that key if the file has one, appended otherwise (the file is created if missing)."""
    begin, end = f"<!-- odimo-compare: {key} -->", f"<!-- /odimo-compare: {key} -->"
    block = f"{begin}\n{section.rstrip()}\n{end}\n"
    text = path.read_text() if path.exists() else "# Results of `odimo compare`\n\n"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end) + r"\n?", re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + block
    atomic_write_bytes(path, text.encode())
