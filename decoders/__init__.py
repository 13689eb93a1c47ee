"""Decoders: tcpdump captures (pcap/pcapng) to Exchanges, then Flows (NAT and proxy hops) and graphs."""
