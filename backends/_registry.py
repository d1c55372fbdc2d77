"""The backend registry: target name -> backend class, imported only when asked for.

`get_backend("android")` returns the backend, or raises `BackendNotInstalled` (a DeployError
naming what to install) when a module the requested operation needs does not import here —
Polygraphy's MissingTool, as an error object instead of a dead command.
"""
from __future__ import annotations

import importlib
import importlib.util
from typing import Dict, List, Tuple

from lraqvit_deploy.errors import BackendNotInstalled, DeployError

from .base import Backend

# target -> (module, class); modules are imported lazily so the CLI starts without any runtime
_BACKENDS: Dict[str, Tuple[str, str]] = {
    "android": ("lraqvit_deploy.backends.executorch.backend", "AndroidBackend"),
    "host": ("lraqvit_deploy.backends.executorch.backend", "HostBackend"),
    "jetson": ("lraqvit_deploy.backends.tensorrt.backend", "JetsonBackend"),
}


def register_backend(name: str, module: str, cls: str) -> None:
    """Make `module.cls` (a `Backend` subclass) available as target `name`."""
    if name in _BACKENDS and _BACKENDS[name] != (module, cls):
        import warnings

        warnings.warn(f"backend {name!r} re-registered: {_BACKENDS[name]} -> {(module, cls)}", stacklevel=2)
    _BACKENDS[name] = (module, cls)


def backend_names(operation: str = "any") -> List[str]:
    """Registered targets that support `operation` ("build", "bench" or "any"), sorted."""
    names = sorted(_BACKENDS)
    if operation == "any":
        return names
    return [n for n in names if getattr(_load(n), f"{operation}_options", None) is not None]


def options_type(name: str, operation: str) -> type:
    """The options dataclass of target `name` for `operation` ("build" or "bench"), without checking installs."""
    cls = getattr(_load(name)(), f"{operation}_options")
    if cls is None:
        raise DeployError(f"target {name!r} cannot {operation}; targets that can: {', '.join(backend_names(operation))}.")
    return cls


def _load(name: str) -> type:
    if name not in _BACKENDS:
        raise DeployError(f"unknown target {name!r}; choose one of {', '.join(sorted(_BACKENDS))}.")
    module, cls = _BACKENDS[name]
    backend = getattr(importlib.import_module(module), cls)
    if not (isinstance(backend, type) and issubclass(backend, Backend)):
        raise TypeError(f"{module}.{cls} is not a Backend subclass")
    return backend


def get_backend(name: str, operation: str = "build") -> Backend:
    """The backend for target `name`, checked to have what `operation` ("build" or "bench") imports."""
    backend = _load(name)()
    missing = [m for m in getattr(backend, f"{operation}_requires", ()) if importlib.util.find_spec(m) is None]
    if missing:
        raise BackendNotInstalled(name, backend.install_hint or ", ".join(missing),
                                  f"no module named {missing[0]!r}")
    return backend
