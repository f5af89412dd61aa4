"""Plugin discovery: a real entry point of an installed distribution, --plugin files, and failures."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from odimo_moo.cli import main
from odimo_moo.errors import PluginError
from odimo_moo.registry import PluginRegistry

PLUGIN_PKG = Path(__file__).parent / "plugin_pkg"


def install_distribution(site: Path, name: str, version: str, entry_points: dict[str, str],
                         modules: dict[str, str | Path]) -> Path:
    """Lay out a distribution in ``site`` the way pip installs one: its packages and a dist-info folder.

    ``modules`` maps a top-level package name to its ``__init__.py`` source text, or to a folder to copy.
    """
    site.mkdir(parents=True, exist_ok=True)
    for module, source in modules.items():
        if isinstance(source, Path):
            shutil.copytree(source, site / module, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (site / module).mkdir()
            (site / module / "__init__.py").write_text(textwrap.dedent(source))
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = "".join(f"{key} = {value}\n" for key, value in entry_points.items())
    (info / "entry_points.txt").write_text(f"[odimo_moo]\n{lines}")
    (info / "top_level.txt").write_text("".join(f"{module}\n" for module in modules))
    return site


@pytest.fixture
def testsoc_site(tmp_path: Path) -> Path:
    """tests/plugin_pkg installed into a fresh site directory, entry points taken from its pyproject."""
    project = tomllib.loads((PLUGIN_PKG / "pyproject.toml").read_text())["project"]
    return install_distribution(tmp_path / "site", project["name"], project["version"],
                                project["entry-points"]["odimo_moo"],
                                {"odimo_testsoc": PLUGIN_PKG / "odimo_testsoc"})


@pytest.fixture
def on_path(monkeypatch: pytest.MonkeyPatch):
    """Put a site directory on sys.path for this test only (and forget modules imported from it)."""
    added: list[Path] = []

    def add(site: Path) -> None:
        monkeypatch.syspath_prepend(str(site))
        added.append(site)

    yield add
    for name, module in list(sys.modules.items()):
        location = getattr(module, "__file__", None) or ""
        if any(location.startswith(str(site)) for site in added):
            del sys.modules[name]


def test_entry_point_plugin_in_subprocess(testsoc_site: Path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(testsoc_site),
                                                                    os.environ.get("PYTHONPATH")])))
    result = subprocess.run([sys.executable, "-m", "odimo_moo.cli", "plugins", "--json"], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    listing = json.loads(result.stdout)
    socs = {soc["name"]: soc for soc in listing["socs"]}
    assert {"diana", "darkside", "example_npu", "testsoc"} <= set(socs)
    testsoc = socs["testsoc"]
    assert testsoc["plugin"] == "testsoc"
    assert testsoc["origin"] == "entry point odimo_testsoc (odimo-testsoc 0.1)"
    assert [unit["name"] for unit in testsoc["units"]] == ["big", "little", "vec"]
    assert testsoc["frequency_hz"] == 100e6
    assert {"name": "testsoc", "origin": testsoc["origin"]} in listing["plugins"]


def test_entry_point_plugin_in_process(testsoc_site: Path, on_path, capsys):
    on_path(testsoc_site)
    socs = PluginRegistry.load().socs()
    assert socs["testsoc"].plugin == "testsoc"
    assert socs["testsoc"].origin == "entry point odimo_testsoc (odimo-testsoc 0.1)"
    assert socs["diana"].origin.startswith("entry point odimo_moo.soc_plugins.diana")
    # the user's SoC is usable from the CLI like a built-in one
    layer = "conv2d in_channels=8 out_channels=8 kernel_size=3 output_size=4x4"
    assert main(["cost", "--soc", "testsoc", "--layer", layer, "--split", "big=2,little=2,vec=4", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    big = -(-2 * 8 * 9 * 16 // 8) + 100  # ceil(n*cin*k*k*ho*wo / 8) + setup
    little = 2 * 8 * 9 * 16 / 2
    vec = -(-4 // 4) * 4 * 4
    assert out["units"]["big"]["latency_cycles"] == big
    assert out["units"]["little"]["latency_cycles"] == little
    assert out["units"]["vec"]["latency_cycles"] == vec
    assert out["latency_cycles"] == max(big, little, vec)
    latency = max(big, little, vec)
    energy = 50 * big + 2 * (latency - big) + 5 * little + 0.5 * (latency - little) + 10 * vec + 1 * (latency - vec)
    assert out["energy_uj"] == pytest.approx(energy / 100e6 * 1e3)


def test_entry_point_that_fails_to_import(tmp_path: Path, on_path, capsys):
    site = install_distribution(tmp_path / "site", "odimo-broken", "0.2", {"broken": "odimo_broken"},
                                {"odimo_broken": "raise RuntimeError('missing calibration table')\n"})
    on_path(site)
    with pytest.raises(PluginError, match=r"plugin 'broken' \(entry point odimo_broken from odimo-broken 0.2\) "
                                          r"failed to import: RuntimeError: missing calibration table"):
        PluginRegistry.load()
    assert main(["plugins"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "plugin 'broken'" in err and "Traceback" not in err


def write_plugin(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / f"{name}.py"
    header = "from odimo_moo import FormulaUnit, SoC, hookimpl\n"
    path.write_text(header + textwrap.dedent(body))
    return path


SOC_PLUGIN = """
    def _cycles(layers, n):
        return n * layers.in_channels

    @hookimpl
    def odimo_register_socs():
        return [SoC({name!r}, [FormulaUnit("core", _cycles, lambda spec: True, 1.0)], 1e8)]
"""


def test_plugin_given_as_py_file(tmp_path: Path, capsys):
    path = write_plugin(tmp_path, "mysoc", SOC_PLUGIN.format(name="mysoc"))
    assert main(["--plugin", str(path), "plugins", "--json"]) == 0
    socs = {soc["name"]: soc for soc in json.loads(capsys.readouterr().out)["socs"]}
    assert socs["mysoc"]["plugin"] == str(path)
    assert socs["mysoc"]["origin"] == f"file {path.resolve()}"


def test_plugin_given_as_yaml_file(tmp_path: Path, capsys):
    path = tmp_path / "edge.yaml"
    path.write_text(textwrap.dedent("""
        name: edge
        frequency_mhz: 50
        default_unit: mcu
        units:
          mcu: {active_power_mw: 3, cycles: "n * cin * kh * kw * ho * wo"}
    """))
    assert main(["--plugin", str(path), "plugins", "--json"]) == 0
    socs = {soc["name"]: soc for soc in json.loads(capsys.readouterr().out)["socs"]}
    assert socs["edge"]["origin"] == f"YAML file {path.resolve()}"
    assert socs["edge"]["plugin"] == str(path)
    assert main(["--plugin", str(path), "cost", "--soc", "edge", "--json", "--split", "mcu=4",
                 "--layer", "linear in_features=10 out_features=4"]) == 0
    assert json.loads(capsys.readouterr().out)["latency_cycles"] == 4 * 10


FAILURES = [
    ("import_error", "import odimo_no_such_dependency\n",
     r"plugin '.*import_error.py' failed to import: ModuleNotFoundError: No module named 'odimo_no_such_dependency'"),
    ("duplicate", SOC_PLUGIN.format(name="diana"),
     r"duplicate SoC name 'diana': registered by plugin 'diana' and by plugin '.*duplicate.py'"),
    ("returns_dict", "@hookimpl\ndef odimo_register_socs():\n    return {'soc': 1}\n",
     r"plugin '.*returns_dict.py' \(file .*\): odimo_register_socs must return a list of SoC, got dict"),
    ("returns_str", "@hookimpl\ndef odimo_register_socs():\n    return ['diana']\n",
     r"plugin '.*returns_str.py' \(file .*\): odimo_register_socs returned str, expected SoC"),
    ("raises", "@hookimpl\ndef odimo_register_socs():\n    raise KeyError('clock')\n",
     r"plugin '.*raises.py' \(file .*\) raised in odimo_register_socs: KeyError: 'clock'"),
    ("typo", "@hookimpl\ndef odimo_register_soc():\n    return []\n",
     r"plugin '.*typo.py' \(file .*\) implements hooks wrongly: .*odimo_register_soc"),
]


@pytest.mark.parametrize("name, body, message", FAILURES, ids=[f[0] for f in FAILURES])
def test_broken_py_plugins(tmp_path: Path, capsys, name, body, message):
    path = write_plugin(tmp_path, name, body)
    with pytest.raises(PluginError, match=message):
        PluginRegistry.load([str(path)]).socs()
    assert main(["--plugin", str(path), "plugins"]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("odimo plugins: error: ") and captured.err.count("\n") == 1
    assert "Traceback" not in captured.err


@pytest.mark.parametrize("ref, message", [
    ("odimo_no_such_plugin_module", r"plugin 'odimo_no_such_plugin_module' not found"),
    ("missing.py", r"plugin file 'missing.py' does not exist"),
    ("missing.yaml", r"plugin 'missing.yaml': YAML SoC file does not exist"),
])
def test_missing_plugins(ref, message):
    with pytest.raises(PluginError, match=message):
        PluginRegistry.load([ref], entry_points=False)


def test_broken_yaml_plugin_names_plugin_and_key(tmp_path: Path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\nfrequency_hz: 1e8\ndefault_unit: a\nunits:\n  a: {active_power_mw: -1, cycles: n}\n")
    assert main(["--plugin", str(path), "plugins"]) == 2
    err = capsys.readouterr().err
    assert err == (f"odimo plugins: error: plugin '{path}': SoC file {path}: units.a.active_power_mw: "
                   f"must not be negative, got -1\n")
