"""TCP header flags and IPv4 fragment bits, named once (RFC 9293 section 3.1, RFC 791 section 3.1).

Hot loops bind these to locals or compare against them as module globals; the numbers appear
nowhere else."""

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
CONTROL = FIN | SYN | RST  # a segment without payload is kept only if it carries one of these

IP_MORE_FRAGMENTS = 0x2000  # in the IPv4 flags + fragment-offset field
IP_FRAGMENT_OFFSET = 0x1FFF
IP_FRAGMENTED = IP_MORE_FRAGMENTS | IP_FRAGMENT_OFFSET  # non-zero: this datagram is a fragment
