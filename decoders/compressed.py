"""Compressed captures (``.pcap.gz``, ``.pcapng.zst``, …) opened as a stream of the capture's bytes.

The compression is sniffed from the file's first bytes, never its name (uploads have no trustworthy
name). tshark 4.0 reads gzip, zstd and lz4 (frame format) captures; bzip2 and xz come with Python and
cost nothing, so they are read too. Decompression streams: memory does not grow with the file."""

from __future__ import annotations

import bz2
import gzip
import lzma
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

# magic -> name (no two share their first three bytes: four bytes of a head are enough to tell)
COMPRESSIONS: dict[bytes, str] = {
    b"\x1f\x8b": "gzip",
    b"\x28\xb5\x2f\xfd": "zstd",
    b"\x04\x22\x4d\x18": "lz4",
    b"BZh": "bzip2",
    b"\xfd7zXZ\x00": "xz",
}
HEAD_BYTES = 6  # every magic above, whole


def compression_of(head: bytes) -> str | None:
    """The compression a file's first bytes announce, or None for an uncompressed file."""
    for magic, name in COMPRESSIONS.items():
        if len(head) >= min(len(magic), 4) and head.startswith(magic[:len(head)]):
            return name
    return None


def open_decompressed(raw: BinaryIO, compression: str) -> BinaryIO:
    """A read-only stream of the decompressed bytes of ``raw`` (positioned at its start)."""
    if compression == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    if compression == "bzip2":
        return bz2.BZ2File(raw, "rb")  # type: ignore[return-value]
    if compression == "xz":
        return lzma.LZMAFile(raw, "rb")  # type: ignore[return-value]
    if compression == "zstd":
        import zstandard

        # read_across_frames: zstd -T / pzstd write several frames; tshark reads them all
        return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)  # type: ignore[return-value]
    if compression == "lz4":
        import lz4.frame

        return lz4.frame.LZ4FrameFile(raw, "rb")  # type: ignore[return-value]
    raise ValueError(f"unknown compression {compression!r}")


class CaptureStream:
    """An open capture file: ``stream`` gives the capture's (decompressed) bytes, ``compression`` says
    which compression was undone (None for a plain file), ``raw_offset()`` how far into the file on
    disk reading has got (what progress reports count: the file sizes they are measured against are
    compressed sizes)."""

    def __init__(self, path: Path) -> None:
        self.raw: BinaryIO = open(path, "rb")  # noqa: SIM115 - closed in close()
        try:
            head = self.raw.read(HEAD_BYTES)
            self.raw.seek(0)
            self.compression = compression_of(head)
            self.stream = (self.raw if self.compression is None
                           else open_decompressed(self.raw, self.compression))
        except BaseException:
            self.raw.close()
            raise

    def raw_offset(self) -> int:
        return self.raw.tell()

    def close(self) -> None:
        try:
            if self.stream is not self.raw:
                self.stream.close()
        finally:
            self.raw.close()

    def __enter__(self) -> CaptureStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def progress_of(self, progress: Callable[[int], None] | None) -> Callable[[int], None] | None:
        """``progress`` fed with the offset in the file on disk instead of the decompressed offset."""
        if progress is None or self.compression is None:
            return progress
        return lambda _offset: progress(self.raw_offset())
