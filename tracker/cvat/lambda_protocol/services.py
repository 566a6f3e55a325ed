"""Build the lambda-protocol services from options, loading the model up front.

Used by the Nuclio functions (from their environment) and by the server (from its command line):
a wrong model id, file or device fails when the function or server starts, in its log, rather
than on a user's first click.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import redis

from tracker.cvat import env_options
from tracker.cvat.agent.interaction import Sam2InteractionFunction
from tracker.cvat.lambda_protocol.lambda_api import LambdaTracker
from tracker.cvat.lambda_protocol.lambda_interactor import LambdaInteractor
from tracker.cvat.options import TrackerOptions
from tracker.cvat.shape_tracker import ShapeTracker
from tracker.cvat.stores.redis_store import RedisStateStore
from tracker.cvat.stores.state_store import MemoryStateStore, StateStore, StoreUnavailableError

_log = logging.getLogger(__name__)


def build_tracker(
    options: TrackerOptions, redis_client: tuple[redis.Redis, str] | None
) -> LambdaTracker:
    """The tracker service, with its states in Redis when a client is given."""
    tracker = ShapeTracker(options)
    with env_options.phrased_for_env():
        engine = tracker.engine  # load now: fail fast
    store: StateStore
    if redis_client is None:
        store = MemoryStateStore(options.max_state_memory_mb)
    else:
        client, where = redis_client
        # Recently used states are also kept here, within the same budget as the in-process
        # store's, so that a step reads from Redis only what another replica wrote.
        store = RedisStateStore(
            client, engine, tracker.model_key, where, cache_mb=options.max_state_memory_mb
        )
        try:
            store.ping()
        except StoreUnavailableError as e:
            # Requests will be answered 503 with this message until Redis is back.
            _log.error("%s", e)
    _log.info("SAM2 tracker ready; tracking states in %s", store.describe())
    return LambdaTracker(tracker, store)


def build_interactor(settings: env_options.InteractorSettings) -> LambdaInteractor:
    function = Sam2InteractionFunction(settings.options)  # its errors are phrased for env
    function.segmenter  # noqa: B018 - load now: fail fast
    max_bytes = settings.options.max_embedding_memory_mb * 1024 * 1024
    return LambdaInteractor(function, max_bytes, answer=settings.answer)


def tracker_from_env(environ: Mapping[str, str]) -> LambdaTracker:
    return build_tracker(env_options.tracker_options(environ), env_options.redis_client(environ))


def interactor_from_env(environ: Mapping[str, str]) -> LambdaInteractor:
    return build_interactor(env_options.interactor_settings(environ))
