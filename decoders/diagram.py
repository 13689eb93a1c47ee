"""The sequence diagram every graph of meshscope draws: columns (participants) and sections of
messages in time order. The packet-flow graph (one section per flow) and a request's trace graph
(its proxy hops, then its packet flows) both build a ``Diagram``; the SVG, Mermaid and text renderers
take one."""

from __future__ import annotations

from dataclasses import dataclass, field

STYLES = ("handshake", "hello", "request", "response", "nat", "note", "error")  # error: failed exchanges


@dataclass(slots=True)
class Message:
    """One arrow (or, from a participant to itself, a note) at time ``t``."""

    t: float
    src: str  # participant key (an ip, or a name where no ip is known)
    dst: str
    label: str
    style: str  # one of STYLES


@dataclass(slots=True)
class Section:
    """A titled run of messages (one flow, or one request's proxy hops); times are shown from ``start``."""

    title: str
    start: float
    messages: list[Message] = field(default_factory=list)


@dataclass(slots=True)
class Diagram:
    participants: list[str] = field(default_factory=list)  # in order of first appearance
    labels: dict[str, str] = field(default_factory=dict)  # participant → workload name, where known
    sections: list[Section] = field(default_factory=list)
    section_name: str = "flow"  # what a section is ("flow", "connection", "overview"): its heading says
    caption: str = ""  # one line above the drawing: what is drawn and why (a filter, an overview's threshold)

    def add(self, section: Section) -> None:
        """Append a section, adding its participants as they first appear."""
        self.sections.append(section)
        for m in section.messages:
            for p in (m.src, m.dst):
                if p not in self.participants:
                    self.participants.append(p)

    def title(self, participant: str) -> str:
        name = self.labels.get(participant)
        return f"{name} ({participant})" if name else participant
