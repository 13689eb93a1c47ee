"""Scapy-crafted captures of DESIGN.md's lab path for the API tests: a NodePort DNAT hop seen on the
node (one file) and the pod side with the gateway's upstream request (another file)."""

from __future__ import annotations

from pathlib import Path

from tests.decoders.capture_builders import Conversation, http_request, http_response, write

CLIENT, NODE, GATEWAY, WEBAPP = "172.18.0.1", "172.18.0.2", "10.10.0.6", "10.10.0.9"


def lab_captures(folder: Path, rid: str, t0: float) -> tuple[Path, Path]:
    """Two captures of one request: client → NodePort 30000 (node side, ``rid`` as the client sent it),
    then DNAT to the gateway pod and the gateway's request to the webapp (pod side, sampling digit "b")."""
    upstream_rid = rid[:14] + "b" + rid[15:]
    request = http_request("GET", "/catalog", host="shop.local", x_request_id=rid)
    response = http_response(200, b"catalog!")

    def client_leg(dst: str, dport: int) -> Conversation:
        c = Conversation(client=CLIENT, server=dst, cport=57536, sport=dport, cisn=11111, sisn=22222, t=t0)
        c.handshake()
        c.send(True, request)
        c.t += 0.008  # the gateway answers once its upstream call (below) has
        c.send(False, response)
        return c.close()

    node_side = client_leg(NODE, 30000)
    pod_side = client_leg(GATEWAY, 8080)
    for p in pod_side.packets:
        p.time += 0.0002  # after the DNAT
    up = Conversation(
        client=GATEWAY, server=WEBAPP, cport=46612, sport=8080, cisn=33333, sisn=44444, t=t0 + 0.0045
    )
    up.handshake()
    up.send(
        True,
        http_request(
            "GET",
            "/catalog",
            host="shop.local",
            x_request_id=upstream_rid,
            x_forwarded_for=CLIENT,
            x_envoy_attempt_count="1",
        ),
    )
    up.send(False, response)
    up.close()
    pod_packets = sorted(pod_side.packets + up.packets, key=lambda p: p.time)
    return (write(folder / "node-eth0.pcap", node_side.packets), write(folder / "pod-veth.pcap", pod_packets))
