"""The short routes YAML: what it accepts, and the clear errors it gives for what it does not."""

from __future__ import annotations

import pytest
from meshscope.proxy.routes import RoutesError, load_routes, parse_duration, parse_routes

PLAIN = """
listeners:
  - name: ingress
    port: 15001
    virtual_hosts:
      - domains: ["*"]
        routes:
          - {prefix: /api, cluster: api, timeout: 250ms, retry: {retry_on: [5xx, reset], num_retries: 2,
             per_try_timeout: 0.5s}}
          - {cluster: web}
clusters:
  - {name: api, endpoints: ["127.0.0.1:9000", "localhost:9001"], lb_policy: least_request}
  - {name: web, endpoints: ["[::1]:8080"]}
"""


def test_plain_routes_parse_into_dataclasses():
    routes = parse_routes(PLAIN)
    assert routes.admin_port == 15000
    listener = routes.listener("ingress")
    assert (listener.address, listener.port) == ("0.0.0.0", 15001)
    api, web = listener.virtual_hosts[0].routes
    assert (api.prefix, api.cluster, api.timeout) == ("/api", "api", 0.25)
    assert (api.retry.retry_on, api.retry.num_retries, api.retry.per_try_timeout) == ("5xx,reset", 2, 0.5)
    assert (web.prefix, web.timeout, web.retry) == ("/", 15.0, None)
    endpoints = [(e.host, e.port) for e in routes.cluster("api").endpoints]
    assert endpoints == [("127.0.0.1", 9000), ("localhost", 9001)]
    assert routes.cluster("api").lb_policy == "least_request"
    assert routes.cluster("web").endpoints[0].host == "::1"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("listeners: [", "not valid YAML"),
        ("- a\n- b", "top level: expected a mapping"),
        ("clusters: []", "missing required key(s) listeners"),
        ("listeners: []", "at least one listener"),
        (
            "listeners: [{name: x, port: 1, virtual_hosts: [{routes: [{cluster: nope}]}]}]",
            "unknown cluster 'nope'",
        ),
        ("listeners: [{name: x, port: 70000, virtual_hosts: []}]", "listeners[0].port: expected an integer"),
        ("listeners: [{name: x, port: 1}]", "exactly one of virtual_hosts"),
        (
            "listeners: [{name: x, port: 1, virtual_hosts: [{routes: [{cluster: c, timeout: soon}]}]}]\n"
            "clusters: [{name: c, endpoints: ['h:1']}]",
            "routes[0].timeout: expected a duration",
        ),
        (
            "listeners: [{name: x, port: 1, virtual_hosts: [{routes: [{cluster: c, prefix: api}]}]}]\n"
            "clusters: [{name: c, endpoints: ['h:1']}]",
            "prefix: expected a path starting with '/'",
        ),
        ("listeners: [{name: x, port: 1, bogus: 2, virtual_hosts: []}]", "unknown key(s) bogus"),
        (
            "listeners: [{name: x, port: 1, passthrough: [{server_names: [a], cluster: c}]}]\n"
            "clusters: [{name: c, endpoints: ['nohostport']}]",
            "clusters[0].endpoints[0]: expected host:port",
        ),
        (
            "listeners: [{name: x, port: 1, passthrough: [{server_names: [a], cluster: c}]}]\n"
            "clusters: [{name: c, endpoints: ['h:1'], lb_policy: fastest}]",
            "lb_policy: expected one of",
        ),
        (
            "listeners: [{name: x, port: 1, passthrough: [{server_names: [a], cluster: c}]}]\n"
            "clusters: [{name: c, endpoints: ['h:1']}, {name: c, endpoints: ['h:2']}]",
            "duplicate cluster name(s) c",
        ),
        (
            "listeners: [{name: x, port: 1, tls: [{server_names: [a], cert: /no/such.crt, key: /no/such.key, "
            "virtual_hosts: [{routes: [{cluster: c}]}]}]}]\nclusters: [{name: c, endpoints: ['h:1']}]",
            "tls[0].cert: no such file",
        ),
    ],
)
def test_bad_routes_get_an_error_naming_the_key(text, message):
    with pytest.raises(RoutesError) as err:
        parse_routes(text, source="r.yaml")
    assert message in str(err.value)
    assert str(err.value).startswith("r.yaml: ")


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(RoutesError, match="cannot read routes file"):
        load_routes(tmp_path / "absent.yaml")


def test_self_signed_chains_get_a_certificate_in_the_data_dir(tmp_path, data_dir):
    path = tmp_path / "gw.yaml"
    path.write_text(
        "listeners: [{name: gw, port: 1, tls: [{server_names: [a.example, '*.b.example'], self_signed: true,"
        " virtual_hosts: [{routes: [{cluster: c}]}]}]}]\nclusters: [{name: c, endpoints: ['h:1']}]\n"
    )
    chain = load_routes(path, data_dir=data_dir).listeners[0].tls[0]
    assert chain.cert.parent == data_dir / "certs" and chain.cert.is_file() and chain.key.is_file()
    assert b"BEGIN CERTIFICATE" in chain.cert.read_bytes()
    first = chain.cert.read_bytes()
    # a second load reuses the still-valid certificate instead of minting a new one
    assert load_routes(path, data_dir=data_dir).listeners[0].tls[0].cert.read_bytes() == first


def test_durations():
    assert parse_duration("1s", "t") == 1.0
    assert parse_duration("250ms", "t") == 0.25
    assert parse_duration("2m", "t") == 120.0
    assert parse_duration(3, "t") == 3.0
    for bad in ("1h", "-1s", True, "", "1 s x"):
        with pytest.raises(RoutesError):
            parse_duration(bad, "t")


def test_variables_expand_from_arguments_then_environment_then_default(monkeypatch):
    text = (
        "admin_port: ${ADMIN:-15000}\n"
        "listeners: [{name: l, port: ${PORT}, virtual_hosts: [{routes: [{cluster: c}]}]}]\n"
        "clusters: [{name: c, endpoints: ['${HOST:-127.0.0.1}:${UP:-18080}']}]\n"
    )
    monkeypatch.setenv("PORT", "15999")
    monkeypatch.setenv("UP", "9000")
    routes = parse_routes(text, variables={"UP": 9100})
    assert (routes.admin_port, routes.listeners[0].port) == (15000, 15999)
    assert (routes.clusters[0].endpoints[0].host, routes.clusters[0].endpoints[0].port) == ("127.0.0.1", 9100)
    monkeypatch.delenv("PORT")
    with pytest.raises(RoutesError, match=r"\$\{PORT\} is not set and has no default"):
        parse_routes(text)
