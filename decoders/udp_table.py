"""The UDP counterpart of the connection table: datagrams in, Exchanges out.

DNS (port 53, either side) goes to the lookup tracker (decoders.dns_lookups); a flow whose first
datagram is a QUIC long-header packet of a known version is a QUIC connection: its client
Initials are opened (decoders.quic_initial) for the ClientHello, the server's for its
ServerHello, and every QUIC packet either way is counted. A QUIC connection's Exchange (exchange_type
"tls", conn.transport "udp") is emitted when the flow ends (capture end, or evicted as the least
recently active of MAX_FLOWS). Other UDP is counted, not tracked."""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

from meshscope.decoders.dns_lookups import DnsLookups
from meshscope.decoders.dns_message import parse_dns
from meshscope.decoders.quic_initial import (
    SALTS,
    V2,
    CryptoStream,
    InitialKeys,
    crypto_frames,
    long_packets,
    open_initial,
    version_name,
)
from meshscope.decoders.tls_hello import parse_client_hello, parse_server_hello

from meshscope.model import Connection, Exchange, QuicInitial

DNS_PORT = 53
MAX_FLOWS = 20_000  # QUIC connections tracked at once
MAX_DAMAGE = 100


class Datagram(NamedTuple):
    """One UDP datagram as a backend hands it over (the UDP analogue of a Segment)."""

    ts: float
    src: str
    sport: int
    dst: str
    dport: int
    payload: bytes
    missing: int  # payload bytes the snaplen cut off
    interface: str | None


def datagram_shard(sport: int, dport: int, shard: tuple[int, int] | None) -> bool:
    """Whether a datagram is this shard's (decoders.parallel): DNS all goes to shard 0, so that
    a lookup's attempts (often from several source ports) are seen together; other flows by the
    ports' low bytes, as TCP connections."""
    if shard is None or shard[1] <= 1:
        return True
    if sport == DNS_PORT or dport == DNS_PORT:
        return shard[0] == 0
    return (((sport ^ dport) & 0xFF) >> 1) % shard[1] == shard[0]  # as TcpCut.mine


class _QuicFlow:
    __slots__ = ("conn", "ex", "version", "client_keys", "server_keys", "client_crypto", "server_crypto",
                 "client_done", "server_done", "failed")

    def __init__(self, conn: Connection, version: int, dcid: bytes, ts: float) -> None:
        self.conn = conn
        self.version = version
        self.ex = Exchange(exchange_type="tls", conn=conn, index=0, request_time=ts)
        self.ex.quic = QuicInitial(version=version_name(version), dcid=dcid.hex())
        self.client_keys = InitialKeys.derive(dcid, version)
        self.server_keys = InitialKeys.derive(dcid, version, server=True)
        self.client_crypto = CryptoStream()
        self.server_crypto = CryptoStream()
        self.client_done = self.server_done = False
        self.failed = False


def _is_retry(payload: bytes, version: int) -> bool:
    """A long-header Retry packet of ``version`` (type bits 3 in v1, 0 in v2)."""
    return len(payload) > 6 and payload[1:5] == version.to_bytes(4, "big") and \
        (payload[0] >> 4) & 3 == (0 if version == V2 else 3)


class UdpTable:
    """All UDP of one capture; completed Exchanges collect in ``ready`` (the connection table's
    list, so the backend drains one); ``finish()`` emits what is open."""

    def __init__(self, capture: str, ready: list[Exchange], dns: DnsLookups | None = None) -> None:
        self.capture = capture
        self.ready = ready
        self.dns = dns if dns is not None else DnsLookups(capture, ready)
        self.flows: OrderedDict[tuple, _QuicFlow | None] = OrderedDict()  # None: a UDP flow not QUIC
        self.datagrams = 0
        self.quic_connections = 0
        self.damage: list[str] = []
        self.damage_count = 0
        self.names = None  # decoders.pod_labels.K8sNames: pod and service names by IP, for new flows

    def note_damage(self, text: str) -> None:
        self.damage_count += 1
        if len(self.damage) < MAX_DAMAGE:
            self.damage.append(text)

    def datagram(self, ts: float, src: str, sport: int, dst: str, dport: int, payload: bytes,
                 missing: int = 0, interface: str | None = None) -> None:
        self.datagrams += 1
        if sport == DNS_PORT or dport == DNS_PORT:
            try:
                msg = parse_dns(payload)
            except ValueError as e:
                if missing:
                    self.note_damage(f"{src}:{sport} -> {dst}:{dport}: DNS message cut short by the snaplen")
                elif payload:
                    self.note_damage(f"{src}:{sport} -> {dst}:{dport}: not a DNS message: {e}")
                return
            self.dns.message(msg, ts, src, sport, dst, dport, "udp", interface)
            return
        key = (src, sport, dst, dport, interface)  # a copy on another interface is another sighting
        flows = self.flows
        if key in flows:
            flow, from_client = flows[key], True
        else:
            rkey = (dst, dport, src, sport, interface)
            if rkey in flows:
                key, flow, from_client = rkey, flows[rkey], False
            else:
                flow, from_client = self._open(key, ts, payload, interface), True
        flows.move_to_end(key)
        if flow is None:
            return
        quic = flow.ex.quic
        assert quic is not None
        if from_client:
            quic.client_packets += 1
        else:
            quic.server_packets += 1
            if flow.ex.response_time is None:
                flow.ex.response_time = ts
        if flow.failed or (flow.client_done and flow.server_done) or not payload[:1] or not payload[0] & 0x80:
            return  # short-header (1-RTT) packets: counted only
        if not from_client and _is_retry(payload, flow.version):
            self._retry(flow, payload)
            return
        self._initials(flow, payload, ts, from_client)

    @staticmethod
    def _retry(flow: _QuicFlow, payload: bytes) -> None:
        """A Retry (RFC 9000 section 17.2.5): the client starts again towards the connection id the
        server chose, and the Initial keys from then on come from that id (RFC 9001 section 5.2)."""
        scid_at = 6 + payload[5]
        if len(payload) <= scid_at or scid_at + 1 + payload[scid_at] > len(payload):
            return
        new_dcid = payload[scid_at + 1:scid_at + 1 + payload[scid_at]]
        flow.client_keys = InitialKeys.derive(new_dcid, flow.version)
        flow.server_keys = InitialKeys.derive(new_dcid, flow.version, server=True)
        flow.client_crypto, flow.server_crypto = CryptoStream(), CryptoStream()
        flow.client_done = False  # the ClientHello comes again in the new Initial

    def _open(self, key: tuple, ts: float, payload: bytes, interface: str | None) -> _QuicFlow | None:
        flow = None
        for pkt in long_packets(payload):
            if pkt.initial and pkt.version in SALTS:
                src, sport, dst, dport, _ = key
                conn = Connection(src=src, sport=sport, dst=dst, dport=dport, capture=self.capture,
                                  interface=interface, transport="udp")
                if self.names is not None:
                    self.names.label(conn)
                flow = _QuicFlow(conn, pkt.version, pkt.dcid, ts)
                self.quic_connections += 1
            break
        self.flows[key] = flow
        if len(self.flows) > MAX_FLOWS:
            self._end(self.flows.popitem(last=False)[1])
        return flow

    def _initials(self, flow: _QuicFlow, payload: bytes, ts: float, from_client: bool) -> None:
        done = flow.client_done if from_client else flow.server_done
        if done:
            return
        stream = flow.client_crypto if from_client else flow.server_crypto
        keys = flow.client_keys if from_client else flow.server_keys
        ex = flow.ex
        try:
            for pkt in long_packets(payload):
                if not pkt.initial or pkt.version != flow.version:
                    continue
                for offset, data in crypto_frames(open_initial(payload, pkt, keys)):
                    stream.add(offset, data)
            msg = stream.message()
            if msg is None:
                return
            mtype, body = msg
            if from_client:
                if mtype != 1:
                    raise ValueError(f"handshake message type {mtype} where a ClientHello should be")
                ch = parse_client_hello(body)
                ex.sni, ex.alpn, ex.tls_offered_versions = ch.sni, ch.alpn, ch.versions
                flow.client_done = True
            else:
                if mtype != 2:
                    raise ValueError(f"handshake message type {mtype} where a ServerHello should be")
                ex.tls_version = parse_server_hello(body).version
                flow.server_done = True
        except (ValueError, IndexError) as e:
            text = f"QUIC {'client' if from_client else 'server'} Initial: {e}"
            ex.damage.append(text)
            c = flow.conn
            self.note_damage(f"{c.src}:{c.sport} -> {c.dst}:{c.dport}: {text}")
            flow.failed = True
            return
        if from_client:  # a hello that arrived whole frees its bytes; the rest is counting
            flow.client_crypto = CryptoStream()
        else:
            flow.server_crypto = CryptoStream()

    def _end(self, flow: _QuicFlow | None) -> None:
        if flow is None:
            return
        if not flow.client_done and not flow.failed:
            flow.ex.damage.append("ClientHello not complete in the captured Initials")
        self.ready.append(flow.ex)

    def finish(self) -> None:
        self.dns.finish()
        while self.flows:
            self._end(self.flows.popitem(last=False)[1])
