"""A real `redis-server` (Debian's package) on a loopback port with a password, for the stores.

No fake: the Redis store must work against a real server's WATCH/MULTI/EXEC, expiry and errors.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis


def free_port() -> int:
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    def __init__(self, folder: Path) -> None:
        executable = shutil.which("redis-server")
        assert executable, "redis-server is not installed: run the README's set-up command"
        self.executable = executable
        self.folder = folder
        self.host = "127.0.0.1"
        self.port = free_port()
        self.password = secrets.token_hex(16)
        self.process: subprocess.Popen | None = None

    @property
    def env(self) -> dict[str, str]:
        """The variables CVAT's deploy scripts and documentation give a Nuclio function."""
        return {
            "CVAT_FUNCTIONS_REDIS_HOST": self.host,
            "CVAT_FUNCTIONS_REDIS_PORT": str(self.port),
            "CVAT_FUNCTIONS_REDIS_PASSWORD": self.password,
        }

    def client(self) -> redis.Redis:
        return redis.Redis(host=self.host, port=self.port, password=self.password)

    def start(self) -> RedisServer:
        self.process = subprocess.Popen(
            [
                self.executable,
                "--bind", "127.0.0.1",
                "--port", str(self.port),
                "--requirepass", self.password,
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.folder),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while True:
            try:
                self.client().ping()
                return self
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None
