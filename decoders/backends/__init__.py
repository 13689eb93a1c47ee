"""Decoder backends behind one interface (base.py); chosen by name here and nowhere else."""

from __future__ import annotations

import importlib

from meshscope.decoders.backends.base import Backend, CaptureReport

BACKENDS = {name: f"meshscope.decoders.backends.{name}_backend" for name in ("dpkt", "scapy", "pyshark")}
DEFAULT_BACKEND = "dpkt"


def get_backend(name: str = DEFAULT_BACKEND) -> Backend:
    """A fresh backend instance by name ("dpkt", "scapy", "pyshark")."""
    try:
        module = importlib.import_module(BACKENDS[name])
    except KeyError:
        raise ValueError(f"unknown decoder backend {name!r}; choose from {', '.join(BACKENDS)}") from None
    return module.BACKEND()


__all__ = ["BACKENDS", "DEFAULT_BACKEND", "Backend", "CaptureReport", "get_backend"]
