"""The test Redis must hold on a busy machine: a port taken before it binds is no failure."""

from __future__ import annotations

import socket

import redis

from tracker.devtools import redis_server
from tracker.devtools.redis_server import RedisServer, refusing_port


def test_a_port_taken_before_the_server_binds_it_is_replaced(tmp_path, monkeypatch):
    # Another process takes the first port handed out between asking and binding.
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    ports = iter([taken.getsockname()[1]])
    real_free_port = redis_server.free_port
    monkeypatch.setattr(redis_server, "free_port", lambda: next(ports, None) or real_free_port())
    server = RedisServer(tmp_path)
    try:
        server.start()
        assert server.port != taken.getsockname()[1]
        assert server.client().ping()
    finally:
        server.stop()
        taken.close()


def test_a_refusing_port_refuses():
    with refusing_port() as port:
        client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=5)
        try:
            client.ping()
        except redis.ConnectionError as error:
            assert "refused" in str(error).lower()
        else:
            raise AssertionError("something answered on the refusing port")
