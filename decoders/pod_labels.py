"""Who sent what: labels on a connection (process, command, container, pod, namespace) from ptcpdump's
per-packet pcapng comments, or from a map of pod and service IPs (``kubectl get pods,svc -A -o json``).

Labels sit on ``Connection.labels`` as ``client.pod``, ``server.namespace``, … and name the columns
of the graphs (``endpoint_names``).

ptcpdump (github.com/mozillazg/ptcpdump, internal/writer/pcapng.go) writes one pcapng comment per
kind of context on each packet it can attribute, as ``Key: value`` lines: ``PID``/``Cmd``/``Args``,
``ContainerName``/``ContainerId``/…, ``PodName``/``PodNamespace``/…; the process is the one that
owns the socket on the capturing host, and the packet's direction flag (inbound / outbound) tells
whether it is the packet's sender or receiver."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import orjson

from meshscope.errors import UserError

# ptcpdump's keys → our label names (older ptcpdump releases wrote "Command")
PTCPDUMP_KEYS = {"PID": "pid", "Cmd": "command", "Command": "command", "ContainerName": "container",
                 "ContainerId": "container_id", "PodName": "pod", "PodNamespace": "namespace"}
INBOUND, OUTBOUND = 1, 2  # pcapng epb_flags direction bits
MAX_NAMES_BYTES = 256 << 20


def ptcpdump_labels(comments: Iterable[str]) -> dict[str, str]:
    """The labels ptcpdump's comments on one packet carry (empty values left out)."""
    labels: dict[str, str] = {}
    for comment in comments:
        for line in comment.splitlines():
            key, sep, value = line.partition(": ")
            name = PTCPDUMP_KEYS.get(key.strip()) if sep else None
            if name is not None and value.strip():
                labels[name] = value.strip()
    return labels


def process_side(direction: int, from_client: bool) -> str:
    """'client' or 'server': which end of the connection the annotated process is. A packet going
    out was sent by it; one coming in was received by it; without the flag, assume it sent it."""
    sent = direction != INBOUND
    return "client" if sent == from_client else "server"


class K8sNames:
    """Pod and service names by IP, read from ``kubectl get pods,svc -A -o json`` (a List, or a
    single object); ``lookup(ip)`` gives labels for that end of a connection."""

    def __init__(self, by_ip: Mapping[str, dict[str, str]] | None = None) -> None:
        self.by_ip: dict[str, dict[str, str]] = dict(by_ip or {})

    def __len__(self) -> int:
        return len(self.by_ip)

    def label(self, conn: Any) -> Any:
        """Put the pod or service names of both ends on ``conn.labels`` (``client.pod`` …); the
        connection tables (TCP, UDP, DNS) all call this when they open a connection."""
        for side, ip in (("client", conn.src), ("server", conn.dst)):
            found = self.lookup(ip)
            if found:
                conn.labels.update({f"{side}.{k}": v for k, v in found.items()})
        return conn

    def lookup(self, ip: str) -> dict[str, str] | None:
        return self.by_ip.get(ip)

    @classmethod
    def from_file(cls, path: str | Path) -> K8sNames:
        """UserError (one line) for a file that is unreadable, not JSON, or holds no pod or service."""
        path = Path(path)
        try:
            if path.stat().st_size > MAX_NAMES_BYTES:
                raise UserError(f"{path}: larger than {MAX_NAMES_BYTES >> 20} MB; not a kubectl listing")
            data = orjson.loads(path.read_bytes())
        except OSError as e:
            raise UserError(f"{path}: cannot read the pod/service names: {e.strerror or e}") from None
        except orjson.JSONDecodeError as e:
            raise UserError(f"{path}: not JSON (expected `kubectl get pods,svc -A -o json`): {e}") from None
        names = cls.from_kubectl(data)
        if not names:
            raise UserError(f"{path}: no pod or service with an IP in it "
                            "(expected `kubectl get pods,svc -A -o json`)")
        return names

    @classmethod
    def from_kubectl(cls, data: Any) -> K8sNames:
        items = data.get("items") if isinstance(data, dict) and "items" in data else [data]
        by_ip: dict[str, dict[str, str]] = {}
        for item in items if isinstance(items, list) else []:
            if not isinstance(item, dict):
                continue
            kind = item.get("kind")
            meta = item.get("metadata") or {}
            name, ns = meta.get("name"), meta.get("namespace")
            if not isinstance(name, str):
                continue
            if kind == "Pod":
                status = item.get("status") or {}
                if (item.get("spec") or {}).get("hostNetwork"):
                    continue  # its IP is the node's: naming it after one pod would mislabel the rest
                ips = [status.get("podIP")] + [p.get("ip") for p in status.get("podIPs") or []
                                               if isinstance(p, dict)]
                labels = {"pod": name}
            elif kind == "Service":
                spec = item.get("spec") or {}
                ips = [spec.get("clusterIP")] + list(spec.get("clusterIPs") or [])
                labels = {"service": name}
            else:
                continue
            if isinstance(ns, str):
                labels["namespace"] = ns
            for ip in ips:
                if isinstance(ip, str) and _is_ip(ip):
                    by_ip.setdefault(ip, labels)
        return cls(by_ip)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def endpoint_names(exchanges: Iterable[Any]) -> dict[str, str]:
    """IP → the name a graph column should carry (``pod`` or ``service``, with its namespace) from the
    labels on the exchanges' connections; the hook the sequence diagrams name their columns with."""
    names: dict[str, str] = {}
    for ex in exchanges:
        c = ex.conn
        labels = getattr(c, "labels", None)
        if not labels:
            continue
        for side, ip in (("client", c.src), ("server", c.dst)):
            if ip in names:
                continue
            name = labels.get(f"{side}.pod") or labels.get(f"{side}.service")
            if name:
                ns = labels.get(f"{side}.namespace")
                names[ip] = f"{ns}/{name}" if ns else name
    return names
