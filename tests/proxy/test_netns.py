"""The launcher runs Envoy inside a network namespace (as the NAT/proxy-hop labs do)."""

from __future__ import annotations

import os
import random
import subprocess

import httpx
import pytest
from meshscope.proxy.bootstrap import build_bootstrap
from meshscope.proxy.demo_upstream import DemoUpstream
from meshscope.proxy.launcher import EnvoyProcess
from meshscope.proxy.routes import parse_routes

from tests.conftest import free_port, need_binary, need_root

pytestmark = [pytest.mark.envoy, pytest.mark.root, pytest.mark.slow]


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@pytest.fixture
def namespace():
    """A namespace joined to the host by a veth pair: host 10.250.N.1, namespace 10.250.N.2."""
    need_root()
    need_binary("ip")
    name, suffix = f"msproxy{os.getpid()}", os.getpid() % 100000
    host_if, ns_if = f"msph{suffix}", f"mspn{suffix}"
    net = f"10.250.{random.randint(1, 254)}"
    try:
        ip("netns", "add", name)
        ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        ip("link", "set", ns_if, "netns", name)
        ip("addr", "add", f"{net}.1/30", "dev", host_if)
        ip("link", "set", host_if, "up")
        ip("-n", name, "addr", "add", f"{net}.2/30", "dev", ns_if)
        ip("-n", name, "link", "set", ns_if, "up")
        ip("-n", name, "link", "set", "lo", "up")
        yield name, f"{net}.1", f"{net}.2"
    finally:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True, timeout=10)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)


def test_envoy_in_a_namespace_proxies_to_the_host(namespace):
    name, host_ip, ns_ip = namespace
    with DemoUpstream(host_ip, free_port()) as upstream:
        routes = parse_routes(
            "listeners: [{name: ingress, port: 15001, virtual_hosts: [{routes: [{cluster: app}]}]}]\n"
            f"clusters: [{{name: app, endpoints: ['{host_ip}:{upstream.port}']}}]\n"
        )
        # inside its own namespace the fixed lab ports cannot collide with anyone else's
        bootstrap = build_bootstrap(routes, collector=None, admin_port=15000, admin_address=ns_ip)
        with EnvoyProcess(bootstrap, netns=name) as envoy:
            assert envoy.admin_url == f"http://{ns_ip}:15000"
            headers = httpx.get(f"http://{ns_ip}:15001/headers", timeout=5).json()["headers"]
            assert headers["x-forwarded-for"] == host_ip
            assert upstream.seen()[-1]["x-request-id"] == headers["x-request-id"]
            assert envoy.admin.cluster_stat("app", "upstream_rq_200") == 1
        assert not envoy.running()
