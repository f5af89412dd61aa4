"""Plugin discovery and the registries of SoCs and strategies built from it."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Sequence

import pluggy

from . import hookspecs
from .errors import PluginError, UsageError

ENTRY_POINT_GROUP = "odimo_moo"


@dataclass(frozen=True)
class Registered:
    """A registered object with the plugin it came from."""

    name: str
    obj: Any
    plugin: str
    origin: str


def _load_file(path: Path) -> ModuleType:
    module_name = f"odimo_user_plugin_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise PluginError(f"plugin file {path} cannot be imported (is it a .py file?)")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


@dataclass
class PluginRegistry:
    """Loads plugins (entry points, then extra module names, .py files or YAML SoC files) into pluggy."""

    manager: pluggy.PluginManager = field(default_factory=lambda: pluggy.PluginManager(hookspecs.PROJECT))
    origins: dict[str, str] = field(default_factory=dict)
    failed_observers: set[tuple[str, str]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.manager.add_hookspecs(hookspecs)

    @classmethod
    def load(cls, extra_plugins: Sequence[str] = (), entry_points: bool = True) -> "PluginRegistry":
        registry = cls()
        if entry_points:
            registry.load_entry_points()
        for ref in extra_plugins:
            registry.load_plugin(ref)
        return registry

    def load_entry_points(self) -> None:
        for ep in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist is not None else "unknown distribution"
            try:
                plugin = ep.load()
            except (Exception, SystemExit) as exc:  # any import-time failure of user code
                raise PluginError(f"plugin {ep.name!r} (entry point {ep.value} from {dist}) failed to "
                                  f"import: {type(exc).__name__}: {exc}") from exc
            self._register(plugin, ep.name, f"entry point {ep.value} ({dist})")

    def load_plugin(self, ref: str) -> None:
        """Register a plugin given as an importable module name, a ``.py`` file or a YAML SoC file."""
        path = Path(ref)
        if ref.endswith((".yaml", ".yml")):
            self._load_yaml(ref, path)
            return
        try:
            if ref.endswith(".py"):
                if not path.is_file():
                    raise PluginError(f"plugin file {ref!r} does not exist")
                plugin = _load_file(path)
                origin = f"file {path.resolve()}"
            else:
                plugin = importlib.import_module(ref)
                origin = f"module {ref}"
        except PluginError:
            raise
        except ModuleNotFoundError as exc:
            if exc.name is None or not (ref == exc.name or ref.startswith(f"{exc.name}.")):
                # the plugin exists but one of its own imports is missing
                raise PluginError(f"plugin {ref!r} failed to import: {type(exc).__name__}: {exc}") from exc
            raise PluginError(f"plugin {ref!r} not found ({exc}); give an importable module name, a "
                              f"path to a .py file or a YAML SoC file") from exc
        except (Exception, SystemExit) as exc:  # SystemExit: e.g. a script parsing sys.argv at import
            raise PluginError(f"plugin {ref!r} failed to import: {type(exc).__name__}: {exc}") from exc
        self._register(plugin, ref, origin)

    def _load_yaml(self, ref: str, path: Path) -> None:
        from .yaml_soc import YamlSocPlugin, load_soc_file

        if not path.is_file():
            raise PluginError(f"plugin {ref!r}: YAML SoC file does not exist")
        try:
            soc = load_soc_file(path)
        except UsageError as exc:
            raise PluginError(f"plugin {ref!r}: {exc}") from exc
        self._register(YamlSocPlugin(soc), ref, f"YAML file {path.resolve()}")

    def _register(self, plugin: object, name: str, origin: str) -> None:
        if self.manager.is_registered(plugin) or self.manager.has_plugin(name):
            return
        try:
            self.manager.register(plugin, name=name)
            self.manager.check_pending()
        except pluggy.PluginValidationError as exc:
            self.manager.unregister(name=name)
            raise PluginError(f"plugin {name!r} ({origin}) implements hooks wrongly: {exc}") from exc
        self.origins[name] = origin

    def collect(self, registration: hookspecs.Registration) -> dict[str, Registered]:
        """Every object the plugins return from ``registration``'s hook, by name, each checked
        against the hook's contract; a plugin that breaks it is a :class:`PluginError`."""
        hook_name, kind = registration.hook, registration.kind
        hook = getattr(self.manager.hook, hook_name)
        found: dict[str, Registered] = {}
        for impl in hook.get_hookimpls():  # registration order (pluggy calls them in reverse)
            plugin_name = self.manager.get_name(impl.plugin) or repr(impl.plugin)
            origin = self.origins.get(plugin_name, "registered directly")
            try:
                items = impl.function()
            except Exception as exc:
                raise PluginError(f"plugin {plugin_name!r} ({origin}) raised in {hook_name}: "
                                  f"{type(exc).__name__}: {exc}") from exc
            if items is None:
                continue
            if not isinstance(items, (list, tuple)):
                raise PluginError(f"plugin {plugin_name!r} ({origin}): {hook_name} must return a list of "
                                  f"{kind}, got {type(items).__name__}")
            for item in items:
                if not isinstance(item, registration.contract):
                    raise PluginError(f"plugin {plugin_name!r} ({origin}): {hook_name} returned "
                                      f"{type(item).__name__}, expected {kind}")
                if item.name in found:
                    raise PluginError(f"duplicate {registration.what} name {item.name!r}: registered by plugin "
                                      f"{found[item.name].plugin!r} and by plugin {plugin_name!r}")
                found[item.name] = Registered(item.name, item, plugin_name, origin)
        return found

    def socs(self) -> dict[str, Registered]:
        """The registered SoCs (:class:`odimo_moo.soc.SoC`) by name."""
        return self.collect(hookspecs.SOCS)

    def strategies(self) -> dict[str, Registered]:
        """The registered strategies (:class:`odimo_moo.strategy.Strategy`) by name."""
        return self.collect(hookspecs.STRATEGIES)

    def models(self) -> dict[str, Registered]:
        """The registered models (:class:`odimo_moo.models.ModelEntry`) by name."""
        return self.collect(hookspecs.MODELS)

    def heuristics(self) -> dict[str, Registered]:
        """The registered hand-written mappings (:class:`odimo_moo.manual_mapping.ManualMapping`) by name."""
        return self.collect(hookspecs.HEURISTICS)

    def notify(self, hook_name: str, **kwargs: Any) -> None:
        """Call an observer hook on every plugin. Observers cannot stop the work: one that raises is
        reported once on stderr (plugin, hook, error) and ignored from then on."""
        hook = getattr(self.manager.hook, hook_name)
        for impl in reversed(hook.get_hookimpls()):  # pluggy's own order
            plugin_name = self.manager.get_name(impl.plugin) or repr(impl.plugin)
            if (plugin_name, hook_name) in self.failed_observers:
                continue
            try:
                impl.function(**{name: kwargs[name] for name in impl.argnames})
            except Exception as exc:
                self.failed_observers.add((plugin_name, hook_name))
                origin = self.origins.get(plugin_name, "registered directly")
                print(f"odimo: warning: plugin {plugin_name!r} ({origin}) raised in {hook_name}: "
                      f"{type(exc).__name__}: {' '.join(str(exc).split())}; the run goes on without this "
                      f"observer", file=sys.stderr)


def pick(registered: dict[str, Registered], name: str, what: str) -> Any:
    """The object registered as ``name``, or a UsageError listing the known names."""
    if name not in registered:
        known = ", ".join(sorted(registered)) or "none"
        raise UsageError(f"unknown {what} {name!r}; registered {what}s: {known} "
                         f"(see `odimo plugins`; load more with --plugin)")
    return registered[name].obj


def resolve_soc(soc: Any, plugins: Sequence[str] = ()) -> Any:
    """A SoC given as itself, as its registry entry (:class:`Registered`), or by its registered name
    (looked up among the entry-point plugins and ``plugins``)."""
    if isinstance(soc, Registered):
        return soc.obj
    if isinstance(soc, str):
        return pick(PluginRegistry.load(plugins).socs(), soc, "SoC")
    return soc
