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
from collections.abc import Iterator
from pathlib import Path

import redis

_START_ATTEMPTS = 5


def free_port() -> int:
    """A loopback port free at the time of asking, for a server that retries when it is taken.

    Another process may take it before the caller binds it: only servers that start again on a
    new port when theirs is taken (`RedisServer.start`) may rely on it.
    """
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def refusing_port() -> Iterator[int]:
    """A loopback port that refuses connections for as long as the block runs.

    The socket is bound and held but never listens, so no other process can take the port and a
    connection to it is refused at once.
    """
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


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

    def drop_watching(self) -> int:
        """Close, from the server's side, every connection whose last command was a WATCH (a
        transaction's connection dropped before its EXEC); how many there were."""
        with self.client() as client:
            watching = [entry["id"] for entry in client.client_list() if entry["cmd"] == "watch"]
            for client_id in watching:
                client.client_kill_filter(_id=client_id)
        return len(watching)

    def start(self) -> RedisServer:
        """Start the server and wait until it answers with our password.

        A port taken between `free_port` and the server's bind makes redis-server exit: it is then
        started again on another port. A different server already on the port would refuse our
        random password, so a server that answers is ours.
        """
        for _ in range(_START_ATTEMPTS):
            if self._started():
                return self
            self.port = free_port()
        raise RuntimeError(f"redis-server did not start in {_START_ATTEMPTS} attempts")

    def _started(self) -> bool:
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
        deadline = time.monotonic() + 60
        probe = redis.Redis(
            host=self.host, port=self.port, password=self.password, socket_timeout=2
        )
        while True:
            if self.process.poll() is not None:  # exited: the port was taken
                self.process = None
                return False
            try:
                probe.ping()
                return True
            except redis.AuthenticationError:  # someone else's server
                self.stop()
                return False
            except (redis.ConnectionError, redis.TimeoutError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None
