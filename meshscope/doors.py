"""A component's door: its ``__init__`` re-exports what the rest of meshscope may use, loading each
name's private module on first use, so importing a door stays as cheap as importing what is used."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable


def lazy_exports(package: str,
                 exports: dict[str, str]) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for a door; ``exports`` maps each public name to its module,
    relative to ``package`` (``{"Collector": ".server"}``), or ``".module:attr"`` where the public name
    differs from the module's. A name must not also be a submodule's name:
    importing that submodule would put the module itself on the package under the same name."""

    def __getattr__(name: str) -> object:
        try:
            module = exports[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        module, _, attr = module.partition(":")
        value = getattr(importlib.import_module(module, package), attr or name)
        setattr(sys.modules[package], name, value)  # later lookups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__
