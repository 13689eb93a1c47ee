"""Exchanges built by hand for stitching tests: the lab path (client → NodePort → gateway → webapp →
catalog) as each capture point would report it, with knobs for the corner cases."""

from __future__ import annotations

from meshscope.model import Connection, Exchange

RID = "4c3f9e1a-2b7d-4e11-8a9f-0d3c5b6a7e81"
RID_SAMPLED = "4c3f9e1a-2b7d-be11-8a9f-0d3c5b6a7e81"  # Envoy's sampling digit set
TRACE = "80f198ee56343ba864fe8b2a57d3eff7"


def conn(src: str, dst: str, *, isn: int | None = None, t: float | None = None, capture: str = "node.pcap",
         interface: str | None = "eth0") -> Connection:
    """A Connection from "ip:port" strings; the server ISN is derived from the client's."""
    s, sp = src.rsplit(":", 1)
    d, dp = dst.rsplit(":", 1)
    return Connection(src=s, sport=int(sp), dst=d, dport=int(dp), capture=capture, interface=interface,
                      client_isn=isn, server_isn=None if isn is None else (isn * 7 + 1) % 2**32, syn_time=t,
                      handshake_seen=isn is not None)


def http(c: Connection, t: float, *, method: str = "GET", uri: str = "/", status: int = 200,
         dur: float = 0.05, index: int = 0, headers: dict | None = None, **kw) -> Exchange:
    return Exchange(exchange_type="http", conn=c, index=index, request_time=t, response_time=t + dur,
                    method=method, uri=uri, host=kw.pop("host", "shop.lab"), http_version="HTTP/1.1",
                    status=status, headers=dict(headers or {}), **kw)


def tls(c: Connection, t: float, sni: str, *, alpn: list[str] | None = None) -> Exchange:
    return Exchange(exchange_type="tls", conn=c, request_time=t, response_time=t + 0.002, sni=sni,
                    alpn=list(alpn or ["http/1.1"]), tls_offered_versions=["TLS1.3", "TLS1.2"],
                    tls_version="TLS1.3")


def lab_path(t: float = 1000.0, *, snat: bool = False, copies: bool = True, rid: str | None = None,
             capture_pre: str = "node.pcap", capture_post: str = "node.pcap", sport: int = 57536,
             isn: int = 111111) -> list[Exchange]:
    """One request along the lab path, as `tcpdump -i any` on the node sees it (copies on two interfaces)."""
    client = f"172.18.0.1:{sport}"
    pre = conn(client, "172.18.0.2:30000", isn=isn, t=t, capture=capture_pre, interface="veth-client")
    post_src = f"172.18.0.2:{sport}" if snat else client
    post = conn(post_src, "10.10.0.6:8080", isn=isn, t=t + 0.0001, capture=capture_post, interface="veth-gw")
    down_headers = {"x-request-id": rid} if rid else {}
    out = [http(pre, t + 0.001, uri="/products", dur=0.05, headers=down_headers),
           http(post, t + 0.0011, uri="/products", dur=0.0498, headers=down_headers)]
    if copies:  # the routed packet seen again on the bridge
        dup = conn(post_src, "10.10.0.6:8080", isn=isn, t=t + 0.00012, capture=capture_post, interface="br0")
        out.append(http(dup, t + 0.00112, uri="/products", dur=0.0497, headers=down_headers))
    xff = "172.18.0.2" if snat else "172.18.0.1"
    up = conn("10.10.0.6:46612", "10.10.0.9:8080", isn=isn + 1, t=t + 0.002, capture=capture_post,
              interface="veth-gw")
    up_headers = {"x-request-id": RID_SAMPLED, "x-forwarded-for": xff, "x-envoy-attempt-count": "1",
                  "x-b3-traceid": TRACE, "x-b3-spanid": "a1", "x-b3-sampled": "1"}
    out.append(http(up, t + 0.003, uri="/products", dur=0.04, headers=up_headers,
                    peer_workload="istio-ingressgateway", peer_namespace="istio-system"))
    call = conn("10.10.0.9:40000", "10.10.0.8:3000", isn=isn + 2, t=t + 0.005, capture=capture_post,
                interface="veth-webapp")
    call_headers = {"x-request-id": RID_SAMPLED, "x-b3-traceid": TRACE, "x-b3-spanid": "b2",
                    "x-b3-parentspanid": "a1", "x-b3-sampled": "1"}
    out.append(http(call, t + 0.006, uri="/items", dur=0.02, headers=call_headers, host="catalog:3000",
                    peer_workload="webapp", peer_namespace="default"))
    return out
