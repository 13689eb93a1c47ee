"""Receiving one upload: the request body streamed to capture files (raw body, or multipart file parts
fed to python-multipart's streaming parser), under the byte and file limits, each file sniffed for
pcap/pcapng (or gzip/zstd/lz4/bzip2/xz) magic before more of it is written."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from python_multipart.multipart import MultipartParser, parse_options_header

from meshscope.decoders import K8sNames, upload_format
from meshscope.errors import UserError

MAX_FILES_PER_UPLOAD = 16
KEYLOG_PART = "keylog"  # the multipart field name of a TLS key log sent beside the captures
KEYLOG_FILE = "keylog.secret"  # where it waits for the analysis (owner-only), deleted when it ends
MAX_KEYLOG_BYTES = 64 << 20
NAMES_PART = "k8s-names"  # `kubectl get pods,svc -A -o json`: pod and service names by IP (decoders.K8sNames)
NAMES_FILE = "k8s-names.json"
MAX_NAMES_BYTES = 64 << 20


class UploadRejected(Exception):
    """An upload refused with an HTTP status and a message for the person who sent it."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def display_name(name: str | None, index: int) -> str:
    """The client's file name, for display only: no directories, printable, short."""
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(ch for ch in base if ch.isprintable())[:120]
    return base or f"capture-{index + 1}"


class CaptureFiles:
    """Writes the files of one upload, enforcing the byte and file limits and checking each file's magic."""

    def __init__(self, folder: Path, upload_id: str, max_bytes: int) -> None:
        self.folder = folder
        self.upload_id = upload_id
        self.max_bytes = max_bytes
        self.total = 0
        self.files: list[dict[str, Any]] = []
        self._fh = None
        self._head = b""
        self.keylog_bytes: int | None = None  # a key-log part was received (never its content)
        self._keylog = False  # the open file is the key log
        self.names_bytes: int | None = None  # a k8s-names part was received
        self._names = False  # the open file is the k8s-names listing

    def open_keylog(self, _name: str | None = None) -> None:
        """The key-log part: written owner-only beside the captures, not sniffed, not listed as a file."""
        self.close()
        if self.keylog_bytes is not None:
            raise UploadRejected(400, "at most one key-log part per upload")
        fd = os.open(self.folder / KEYLOG_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self._fh = os.fdopen(fd, "wb")
        self._keylog = True
        self.keylog_bytes = 0

    def open_names(self, _name: str | None = None) -> None:
        """The k8s-names part: written beside the captures, read by the analysis, not listed as a file."""
        self.close()
        if self.names_bytes is not None:
            raise UploadRejected(400, f"at most one {NAMES_PART} part per upload")
        self._fh = open(self.folder / NAMES_FILE, "wb")  # noqa: SIM115 - closed in close()
        self._names = True
        self.names_bytes = 0

    def open(self, client_name: str | None) -> None:
        self.close()
        index = len(self.files)
        if index >= MAX_FILES_PER_UPLOAD:
            raise UploadRejected(400, f"at most {MAX_FILES_PER_UPLOAD} captures per upload")
        stored = f"{self.upload_id[:12]}-{index + 1}.cap"
        self.files.append(
            {"name": display_name(client_name, index), "stored": stored, "size": 0, "format": None}
        )
        self._fh = open(self.folder / stored, "wb")  # noqa: SIM115 - closed in close()
        self._head = b""

    def write(self, data: bytes) -> None:
        if not data:
            return
        if self._fh is None:
            raise UploadRejected(400, "capture data outside a file part")
        if self._names or self._keylog:  # a side part: counted against its own limit, not sniffed
            if self._names:
                self.names_bytes = size = (self.names_bytes or 0) + len(data)
                limit, what = MAX_NAMES_BYTES, NAMES_PART
            else:
                self.keylog_bytes = size = (self.keylog_bytes or 0) + len(data)
                limit, what = MAX_KEYLOG_BYTES, "key log"
            if size > limit:
                raise UploadRejected(413, f"{what} larger than {limit} bytes")
            self._fh.write(data)
            return
        self.total += len(data)
        if self.total > self.max_bytes:
            raise UploadRejected(413, f"upload larger than the limit of {self.max_bytes} bytes")
        current = self.files[-1]
        if current["format"] is None:
            self._head += data[:4]
            if len(self._head) >= 4:
                self._sniff(current)
        current["size"] += len(data)
        self._fh.write(data)

    def _sniff(self, current: dict[str, Any]) -> None:
        fmt = upload_format(self._head)  # a compressed capture's own magic is checked when it is analysed
        if fmt is None:
            raise UploadRejected(
                415, f"{current['name']}: not a pcap or pcapng capture, plain or compressed "
                     f"(starts with {self._head[:4].hex()})"
            )
        current["format"] = fmt

    def close(self) -> None:
        """Finish the current file: an empty or too short file is refused."""
        if self._fh is None:
            return
        self._fh.close()
        self._fh = None
        if self._names:  # checked now: a listing that names nothing is refused, not found out later
            self._names = False
            try:
                K8sNames.from_file(self.folder / NAMES_FILE)
            except UserError as exc:
                raise UploadRejected(400, f"{NAMES_PART}: {str(exc).split(': ', 1)[-1]}") from None
            return
        if self._keylog:
            self._keylog = False
            return
        current = self.files[-1]
        if current["size"] == 0:
            raise UploadRejected(400, f"{current['name']}: empty file")
        if current["format"] is None:
            raise UploadRejected(
                415, f"{current['name']}: too short to be a capture ({current['size']} bytes)"
            )

    def abort(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


class MultipartCaptures:
    """Feeds a multipart/form-data body to CaptureFiles part by part, never holding a whole file.
    Parts without a file name (plain form fields) are read and ignored."""

    def __init__(self, boundary: bytes, files: CaptureFiles) -> None:
        self.files = files
        self._field = b""
        self._value = b""
        self._headers: dict[bytes, bytes] = {}
        self._in_file = False
        self._pending: list[tuple[str, Any]] = []  # callbacks cannot raise cleanly: replay after each chunk
        self.parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._part_begin,
                "on_header_field": self._header_field,
                "on_header_value": self._header_value,
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._part_data,
                "on_part_end": self._part_end,
            },
        )

    def _part_begin(self) -> None:
        self._headers = {}
        self._in_file = False

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._field.lower()] = self._value
        self._field = self._value = b""

    def _headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        if params.get(b"name") == KEYLOG_PART.encode():
            self._in_file = True
            self._pending.append(("open_keylog", None))
        elif params.get(b"name") == NAMES_PART.encode():
            self._in_file = True
            self._pending.append(("open_names", None))
        elif b"filename" in params:
            self._in_file = True
            self._pending.append(("open", params[b"filename"].decode("utf-8", "replace")))

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            self._pending.append(("write", bytes(data[start:end])))

    def _part_end(self) -> None:
        if self._in_file:
            self._pending.append(("close", None))

    def feed(self, chunk: bytes) -> None:
        try:
            self.parser.write(chunk)
        except Exception as exc:  # python-multipart raises its own errors on a malformed body
            raise UploadRejected(400, f"malformed multipart body: {exc}") from exc
        pending, self._pending = self._pending, []
        for op, arg in pending:
            getattr(self.files, op)(*(() if arg is None else (arg,)))

    def finish(self) -> None:
        self.parser.finalize()
        self.feed(b"")


async def receive_body(content_type: str, body: AsyncIterator[bytes], files: CaptureFiles) -> None:
    """Stream a request body into ``files``: multipart file parts, or the whole body as one capture."""
    ctype, params = parse_options_header(content_type or "")
    if ctype == b"multipart/form-data":
        boundary = params.get(b"boundary")
        if not boundary:
            raise UploadRejected(400, "multipart body without a boundary")
        multipart = MultipartCaptures(boundary, files)
        async for chunk in body:
            multipart.feed(chunk)
        try:
            multipart.finish()
        except UploadRejected:
            raise
        except Exception as exc:
            raise UploadRejected(400, f"malformed multipart body: {exc}") from exc
        files.close()
        return
    files.open(None)
    async for chunk in body:
        files.write(chunk)
    files.close()
