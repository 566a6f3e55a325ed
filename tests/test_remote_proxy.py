"""The Nuclio functions' proxy (`tracker.cvat.lambda_protocol.remote`) against real HTTP(S) servers
on loopback that answer as Ray Serve, a reverse proxy or our server would: what is retried, counted
by the requests that arrived, and what the message says."""

from __future__ import annotations

import datetime
import http.server
import json
import logging
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tracker.cvat.lambda_protocol import remote, remote_replies
from tracker.cvat.lambda_protocol.remote import RemoteConfigError, RemoteService
from tracker.devtools.redis_server import refusing_port

JSON = "application/json"
RAY_503 = (503, "text/plain", "Service Unavailable: no replica is available.")
RAY_500 = (500, "text/plain", "Internal Server Error: ActorDiedError: the actor died unexpectedly")
NGINX_502 = (502, "text/html", "<html><head><title>502 Bad Gateway</title></head><body>nginx")
NGINX_413 = (413, "text/html", "<html><head><title>413 Request Entity Too Large</title></html>")
OK = (200, JSON, json.dumps({"shapes": [], "states": ["h.1"]}))
DROP = (0, "", "")  # read the request, then close the connection without answering


class Scripted(http.server.ThreadingHTTPServer):
    """Answers each request with the next scripted reply; counts the requests that came."""

    def __init__(self, replies: list[tuple]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.replies, self.bodies = list(replies), []
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        scheme = "https" if isinstance(self.socket, ssl.SSLSocket) else "http"
        return f"{scheme}://127.0.0.1:{self.server_address[1]}"


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        server: Scripted = self.server  # type: ignore[assignment]
        server.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
        status, kind, text, *headers = server.replies.pop(0) if server.replies else OK
        if status == 0:
            self.close_connection = True
            self.connection.close()
            return
        self.send_response(status)
        self.send_header("Content-Type", kind)
        for name, value in (headers[0] if headers else {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(text.encode())))
        self.end_headers()
        self.wfile.write(text.encode())

    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def scripted() -> Iterator:
    servers = []

    def start(*replies: tuple) -> Scripted:
        servers.append(Scripted(list(replies)))
        return servers[-1]

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


def _service(url: str, endpoint: str, **kwargs) -> RemoteService:
    return RemoteService(url, endpoint, "token", backoff=0.01, **kwargs)


STEP = {"image": "x", "states": ["handle7.3", "other.1"]}


def test_interactor_retried_on_ray_and_proxy_errors_whatever_the_body(scripted):
    server = scripted(RAY_503, NGINX_502, OK)
    assert _service(server.url, "interactor").handle({"image": "x"})[0] == 200
    assert len(server.bodies) == 3


@pytest.mark.parametrize("reply", [RAY_503, RAY_500, NGINX_502, DROP])
def test_tracker_unanswered_is_retried_then_says_what_happened(scripted, reply):
    server = scripted(reply, reply, reply, OK)
    status, answer = _service(server.url, "tracker").handle(STEP)
    assert len(server.bodies) == 3, "the request and its two retries, then the last answer"
    assert server.bodies[0] == server.bodies[2], "the same request again"
    assert status in (502, 504)
    if reply is DROP:
        assert "dropped the connection" in answer["message"]
    else:
        assert f"HTTP {reply[0]}" in answer["message"]
        assert remote_replies.excerpt(reply[2])[:20] in answer["message"]
        assert "<html>" not in answer["message"]


@pytest.mark.parametrize("reply", [RAY_503, RAY_500, NGINX_502, DROP])
def test_tracker_unanswered_is_retried(scripted, reply):
    server = scripted(reply, OK)
    assert _service(server.url, "tracker").handle(STEP)[0] == 200
    assert len(server.bodies) == 2
    assert server.bodies[0] == server.bodies[1], "the same request again"


def test_our_json_errors_are_final_for_the_tracker(scripted):
    server = scripted((409, JSON, json.dumps({"message": "stepped elsewhere"})), OK)
    assert _service(server.url, "tracker").handle(STEP) == (409, {"message": "stepped elsewhere"})
    assert len(server.bodies) == 1


def test_a_proxy_refusing_the_body_size_is_named(scripted):
    server = scripted(NGINX_413)
    status, answer = _service(server.url, "interactor").handle({"image": "x"})
    assert status == 413 and len(server.bodies) == 1
    assert "too large" in answer["message"] and "client_max_body_size" in answer["message"]
    assert "SAM2_SERVER_URL" not in answer["message"]


def test_a_refused_connection_is_retried_even_for_the_tracker(caplog):
    # Nothing listens on the port: the request was never sent, so asking again is safe.
    with refusing_port() as port, caplog.at_level(logging.INFO, logger=remote.__name__):
        status, answer = _service(f"http://127.0.0.1:{port}", "tracker").handle(STEP)
    assert status == 502 and "refused the connection" in answer["message"]
    again = [r for r in caplog.records if r.getMessage().startswith("Asking")]
    assert len(again) == 2, "both retries were made"


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (a private CA of one) and its key."""
    folder = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sam2 test CA")])
    now = datetime.datetime.now(datetime.UTC)
    ip = x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([ip]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_a_private_ca_is_trusted_through_its_setting(scripted, tls_files, monkeypatch):
    cert, key = tls_files
    server = scripted(OK)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))  # ignored: trust_env is off
    status, answer = _service(server.url, "interactor").handle({"image": "x"})
    assert status == 502 and "TLS certificate" in answer["message"]
    assert "SAM2_SERVER_CA_BUNDLE" in answer["message"]
    environ = {"SAM2_SERVER_URL": server.url, "SAM2_SERVER_CA_BUNDLE": str(cert)}
    assert RemoteService.from_env(environ, "interactor").handle({"image": "x"})[0] == 200
    with pytest.raises(RemoteConfigError, match="SAM2_SERVER_CA_BUNDLE"):
        RemoteService.from_env({**environ, "SAM2_SERVER_CA_BUNDLE": "/nope.pem"}, "tracker")


def test_a_proxy_image_without_server_url_says_so():
    code = (
        "import sys; sys.modules['torch'] = sys.modules['redis'] = None; "
        "from tracker.cvat.lambda_protocol import nuclio_glue; nuclio_glue.tracker_service({})"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode != 0
    assert "proxy image" in run.stderr and "SAM2_SERVER_URL" in run.stderr


def test_the_servers_own_timeout_is_named(scripted):
    ray_408 = (408, "text/plain", "Request timed out after 45.0s.")
    server = scripted(ray_408, ray_408, ray_408)
    status, answer = _service(server.url, "tracker").handle(STEP)
    assert status == 504 and len(server.bodies) == 3
    assert "serve --request-timeout" in answer["message"]


OURS_BUSY = (503, JSON, json.dumps({"message": "The SAM2 server is busy"}), {"Retry-After": "0"})


@pytest.mark.parametrize("endpoint", ["tracker", "interactor"])
def test_a_busy_server_is_asked_again_after_its_hint(scripted, endpoint):
    server = scripted(OURS_BUSY, OURS_BUSY, OURS_BUSY, OK)
    assert _service(server.url, endpoint).handle(STEP)[0] == 200
    assert len(server.bodies) == 4, "refusals computed nothing: not counted as failed tries"
    assert server.bodies[0] == server.bodies[3]


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("12", 12.0), ("0", 0.0), ("1.5", 1.5), ("-1", None), ("Wed, 21 Oct 2015 07:28:00 GMT", None),
     (None, None), ("inf", None)],
)  # fmt: skip
def test_retry_after_is_read_as_seconds_only(value, seconds):
    assert remote_replies.retry_after_s(value) == seconds


def test_a_503_is_busy_only_with_a_retry_hint(scripted):
    ray_busy = (*RAY_503, {"Retry-After": "3"})
    server = scripted(ray_busy, RAY_503)
    service = _service(server.url, "tracker")
    status, answer, failure = service._ask(b"{}")
    assert (status, failure) == (503, remote_replies.Busy(3.0))
    assert "busy" in answer["message"] and "no replica is available" in answer["message"]
    assert service._ask(b"{}")[2] is remote_replies.Failure.RETRIED, "no hint: as before"
