"""Start and stop the SAM2 server on Ray Serve: a local Ray instance, or a cluster to join.

Everything that can be wrong (model options, Redis URL, token, replicas without shared state) is
checked before Ray starts, with messages in the command line's terms.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import logging
import socket
import time
import urllib.error
import urllib.request

from tracker.cvat.env_options import interactor_settings, redis_client, tracker_options
from tracker.cvat.lambda_protocol import timeouts

_log = logging.getLogger(__name__)

APP_NAME = "sam2"
MIN_TOKEN_CHARS = 16
MAKE_TOKEN = 'python -c "import secrets; print(secrets.token_urlsafe(32))"'
START_TIMEOUT_S = 600.0  # for Ray Serve's controller and HTTP proxy (serve.run waits for replicas)


class ServerConfigError(ValueError):
    """A server setting that cannot work; the message says what to change."""


class ServerStartError(RuntimeError):
    """Ray Serve could not start the server; the message says why, without Ray's traceback."""


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    settings: dict[str, str]  # SAM2_* variables: the Nuclio functions' settings, and SAM2_REDIS_URL
    token: str | None
    host: str = "127.0.0.1"
    port: int = 8000
    insecure: bool = False
    replicas: int = 1
    min_replicas: int | None = None  # both set: autoscaling between them
    max_replicas: int | None = None
    gpus_per_replica: float = 0.0
    cpus_per_replica: float = 1.0
    address: str | None = None  # a Ray cluster to join; None starts a local instance
    max_body_mb: float = 64.0  # a 4K PNG frame in base64 is about 45 MB
    request_timeout_s: float = timeouts.SERVER_REQUEST_TIMEOUT_S  # innermost of the chain
    start_timeout_s: float = START_TIMEOUT_S

    @property
    def autoscaling(self) -> bool:
        return self.min_replicas is not None or self.max_replicas is not None

    def describe_replicas(self) -> str:
        if self.autoscaling:
            return f"{self.min_replicas}..{self.max_replicas} (autoscaling)"
        return str(self.replicas)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check(config: ServerConfig) -> None:
    """Raise ServerConfigError (or the options' ModelConfigError) for a server that cannot work."""
    if not config.token and not (config.insecure and _loopback(config.host)):
        raise ServerConfigError(
            "Set SAM2_SERVER_TOKEN to a long random secret (clients send it as a bearer token); "
            "only a server listening on loopback may run without one, with --insecure. "
            f"Make one with: {MAKE_TOKEN}"
        )
    if config.token and len(config.token) < MIN_TOKEN_CHARS:
        raise ServerConfigError(
            f"SAM2_SERVER_TOKEN has {len(config.token)} characters, too few to be secret (at "
            f"least {MIN_TOKEN_CHARS}); make a random one with: {MAKE_TOKEN}"
        )
    tracker_options(config.settings).model.check_checkpoint()  # before replicas fail on it
    interactor_settings(config.settings)
    shared = redis_client(config.settings) is not None
    if config.autoscaling:
        if config.min_replicas is None or config.max_replicas is None:
            raise ServerConfigError("Give both --min-replicas and --max-replicas to autoscale.")
        if not 0 < config.min_replicas <= config.max_replicas:
            raise ServerConfigError("Replica bounds need 0 < --min-replicas <= --max-replicas.")
    elif config.replicas < 1:
        raise ServerConfigError("--replicas must be at least 1.")
    if (config.autoscaling or config.replicas > 1) and not shared:
        raise ServerConfigError(
            "Several replicas need shared tracking states: add --redis-url "
            "redis://:PASSWORD@HOST:PORT/0 (any replica then continues any object)."
        )
    if min(config.max_body_mb, config.request_timeout_s, config.start_timeout_s) <= 0:
        raise ServerConfigError(
            "--max-body-mb, --request-timeout and --start-timeout must be positive."
        )


def proxy_advice(config: ServerConfig) -> str | None:
    """What the Nuclio proxies and CVAT need changed for this server, if anything: every timeout
    outside the server's request timeout must be longer (`timeouts`)."""
    if config.request_timeout_s <= timeouts.SERVER_REQUEST_TIMEOUT_S:
        return None
    chain = timeouts.for_server_request(config.request_timeout_s)
    return (
        f"--request-timeout {config.request_timeout_s:g} is longer than the proxies' defaults "
        f"allow: deploy the Nuclio proxies with SAM2_SERVER_READ_TIMEOUT={chain.read:g}, "
        f"SAM2_SERVER_CALL_TIMEOUT={chain.call:g} and an eventTimeout of {chain.event:g}s, and "
        f"give CVAT CVAT_NUCLIO_DEFAULT_TIMEOUT={chain.cvat:g} (its default is "
        f"{timeouts.CVAT_TIMEOUT_S:g})."
    )


def _check_port_free(config: ServerConfig) -> None:
    """A taken port would otherwise surface as Ray's proxy failing in its own log."""
    if config.address is not None:
        return  # the proxies run on the cluster's nodes, not necessarily here
    with contextlib.closing(socket.socket()) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((config.host, config.port))
        except OSError as e:
            raise ServerStartError(
                f"Cannot listen on {config.host}:{config.port} ({e.strerror}): another program "
                "uses that port; stop it or choose another --port."
            ) from e


def start(config: ServerConfig) -> str:
    """Deploy the server (Ray started or joined as needed); returns its base URL."""
    check(config)
    import ray
    from ray import serve

    from tracker.serve.app import Sam2Server, ServerLimits

    _check_port_free(config)
    if not ray.is_initialized():
        ray.init(address=config.address, include_dashboard=False, log_to_driver=False)
    start_serve(config)
    scaling = (
        {"autoscaling_config": {"min_replicas": config.min_replicas,
                                "max_replicas": config.max_replicas}}
        if config.autoscaling
        else {"num_replicas": config.replicas}
    )  # fmt: skip
    deployment = Sam2Server.options(
        ray_actor_options={
            "num_gpus": config.gpus_per_replica,
            "num_cpus": config.cpus_per_replica,
        },
        **scaling,
    )
    limits = ServerLimits(
        token=config.token or None,
        max_body_bytes=int(config.max_body_mb * 2**20),
        replicas=config.describe_replicas(),
        request_timeout_s=config.request_timeout_s,
    )
    try:
        serve.run(deployment.bind(dict(config.settings), limits), name=APP_NAME, route_prefix="/")
    except Exception as e:  # Ray's DeploymentFailedError and kin carry a replica's traceback
        why = _last_line(_replica_error() or str(e))
        stop()
        raise ServerStartError(f"The SAM2 replicas did not start: {why}") from e
    url = _http_url(config.host, config.port)
    _log.info("SAM2 server on %s with %s replica(s)", url, config.describe_replicas())
    return url


def start_serve(config: ServerConfig) -> None:
    """Ray Serve's controller and HTTP proxy started (or joined) for `config`; returns once the
    proxy answers on its port, within `config.start_timeout_s` however slowly Ray's worker
    processes start (ServerStartError otherwise, Serve stopped).

    Ray's own waits are made for idle machines (ray/serve/_private/constants.py, 2.60): its
    controller kills a proxy that is not ready within RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S (5 s)
    and starts another, and `serve.start` waits a fixed HTTP_PROXY_TIMEOUT (60 s) for the first.
    On a loaded 2-core machine a proxy's process takes longer than both. The controller gets our
    timeout (`controller_options`, applied when this call creates it); when `serve.start` gives
    up, we join the controller it left running and wait for the proxy ourselves."""
    from ray import serve

    http_options = {
        "host": config.host,
        "port": config.port,
        "request_timeout_s": config.request_timeout_s,
    }
    ready_check = {"RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": f"{config.start_timeout_s:g}"}
    deadline = time.monotonic() + config.start_timeout_s
    try:
        serve.start(
            http_options=http_options,
            controller_options={"runtime_env": {"env_vars": ready_check}},
        )
    except TimeoutError:  # "HTTP proxies not available after 60s": the proxy is still starting
        serve.start(http_options=http_options)  # joins the running controller, waits for nothing
    if config.address is None:  # on a joined cluster the proxies need not run on this node
        _wait_for_proxy(config, deadline)


def _wait_for_proxy(config: ServerConfig, deadline: float) -> None:
    """Until Ray Serve's proxy on this node answers HTTP at all: its `/-/healthz` says 503 until
    an application's routes reach it, and ours is deployed after this."""
    host = "127.0.0.1" if config.host in ("0.0.0.0", "::", "") else config.host
    url = f"{_http_url(host, config.port)}/-/healthz"
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10):
                return
        except urllib.error.HTTPError:
            return  # an answer: the proxy listens
        except OSError:  # URLError included
            pass  # not listening yet
        if time.monotonic() > deadline:
            stop()
            raise ServerStartError(
                f"Ray Serve's HTTP proxy did not answer on {host}:{config.port} within "
                f"{config.start_timeout_s:g} s; on a busy machine give --start-timeout longer."
            )
        time.sleep(0.5)


def _http_url(host: str, port: int) -> str:
    """`http://host:port`, an IPv6 host in brackets (`http://[::1]:8000`)."""
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


def stop() -> None:
    """Delete our application only (a joined cluster may serve others), then leave Ray; a
    local Ray instance ends with this process."""
    import ray

    undeploy()
    ray.shutdown()


def undeploy() -> None:
    """Delete the SAM2 application, and only it (`serve.shutdown()` would delete them all)."""
    from ray import serve

    with contextlib.suppress(Exception):  # not deployed, or Serve already gone
        serve.delete(APP_NAME)


def _replica_error() -> str | None:
    """What the replicas said when they failed (Ray's deployment status holds their traceback)."""
    from ray import serve

    try:
        return serve.status().applications[APP_NAME].deployments[APP_NAME].message or None
    except Exception:  # noqa: BLE001 - only a better message is lost
        return None


def _last_line(text: str) -> str:
    """The error's own words: the last non-empty line of Ray's message (a remote traceback)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no reason given"
