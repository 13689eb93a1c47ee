"""Grafana dashboards, Kibana saved objects and Prometheus rules, shipped as package data of meshscope."""

from pathlib import Path

DASHBOARDS_DIR = Path(__file__).resolve().parent

__all__ = ["DASHBOARDS_DIR"]
