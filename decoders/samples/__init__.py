"""Bundled sample captures (small), e.g. for `meshscope up --traffic` and the docs.

``nodeport-lab.pcap``: `tcpdump -i any` on the node of the NodePort lab (tests/decoders/lab.py;
regenerate with ``python -m tests.decoders.lab decoders/samples/nodeport-lab.pcap`` as root):
client → NodePort 30000 (DNAT) → Envoy gateway → webapp → catalog, twice on one pooled upstream
connection, once with a retry (/flaky), and a TLS connection passed through on SNI secure.lab.
"""

from pathlib import Path

NODEPORT_LAB = Path(__file__).with_name("nodeport-lab.pcap")
