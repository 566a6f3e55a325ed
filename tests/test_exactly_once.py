"""Tracker requests through the Nuclio function: every object stepped once per version, every
request all or nothing, repeats answered from the store, and Redis read only for what a replica's
cache lacks."""

from __future__ import annotations

import contextlib

import pytest
from nuclio_driver import NuclioFunction, box_prompt, stepped, track_frames, tracker_body

from tracker.cvat import shapes
from tracker.cvat.stores.state_cache import StateCache
from tracker.cvat.stores.state_store import parse_token


@pytest.fixture(params=["memory", "redis"])
def function(request, tiny_checkpoint) -> NuclioFunction:
    request.getfixturevalue("with_redis" if request.param == "redis" else "environment")
    return NuclioFunction("tracker")


def _encodes(function: NuclioFunction) -> list:
    """The frames the function runs the image encoder on, from now on."""
    tracker, encoded = function.context.user_data.service.tracker, []
    original = tracker.encode
    tracker.encode = lambda image: encoded.append(image) or original(image)
    return encoded


def _prompts(video) -> list:
    mask = shapes.rle_from_mask(video.masks[0])
    return [box_prompt(video), {"type": "mask", "points": mask}]


def test_a_repeated_request_is_answered_as_the_first_time_without_stepping(function, video):
    reference = track_frames([NuclioFunction("tracker")], video, _prompts(video), 3)
    status, answer = function.call(tracker_body(video.frames[0], _prompts(video), None))
    body = tracker_body(video.frames[1], None, answer["states"])
    status, first = function.call(body)
    encoded = _encodes(function)
    status, again = function.call(body)  # e.g. a proxy's retry after the answer was lost
    assert status == 200 and again == first and encoded == []
    status, answer = function.call(tracker_body(video.frames[2], None, first["states"]))
    assert status == 200 and [first["shapes"], answer["shapes"]] == reference


def test_an_older_state_is_refused_and_changes_nothing(function, video):
    status, start = function.call(tracker_body(video.frames[0], _prompts(video), None))
    status, one = function.call(tracker_body(video.frames[1], None, start["states"]))
    status, two = function.call(tracker_body(video.frames[2], None, one["states"]))
    for old, frame in [(start, 3), (one, 1), (one, 3)]:  # not a repeat of what was stored
        status, answer = function.call(tracker_body(video.frames[frame], None, old["states"]))
        assert status == 409 and "older than the one stored" in answer["message"]
    status, three = function.call(tracker_body(video.frames[3], None, two["states"]))
    assert status == 200 and three["states"] == stepped(two["states"])


def test_one_object_named_twice_is_refused_before_any_work(function, video):
    status, answer = function.call(tracker_body(video.frames[0], [box_prompt(video)], None))
    encoded = _encodes(function)
    status, answer = function.call(tracker_body(video.frames[1], None, answer["states"] * 2))
    assert status == 400 and "same object" in answer["message"] and encoded == []


def test_a_request_moves_all_its_objects_or_none(function, video):
    """B moves on (another request, another frame) while a request stepping A and B works:
    that request is refused, and A is left at the version it had."""
    prompts = _prompts(video)
    reference = track_frames([NuclioFunction("tracker")], video, prompts[:1], 2)
    states = [
        function.call(tracker_body(video.frames[0], [p], None))[1]["states"][0] for p in prompts
    ]
    tracker = function.context.user_data.service.tracker
    original = tracker.step_many

    def b_moves_on_meanwhile(frame, tracked):
        if len(tracked) == 2:
            status, _ = function.call(tracker_body(video.frames[2], None, states[1:]))
            assert status == 200
        return original(frame, tracked)

    tracker.step_many = b_moves_on_meanwhile
    status, answer = function.call(tracker_body(video.frames[1], None, states))
    del tracker.step_many
    assert status == 409, answer
    status, answer = function.call(tracker_body(video.frames[1], None, states[:1]))
    assert status == 200 and answer["states"] == stepped(states[:1])
    assert answer["shapes"] == reference[0]


def test_a_request_takes_two_redis_connections_whatever_its_objects(with_redis, video):
    function = NuclioFunction("tracker")
    stats = lambda: with_redis.client().info("stats")["total_connections_received"]  # noqa: E731
    before = stats() + 1  # this look-up's own connection
    prompts = [[x, y, x + 20, y + 20] for x in range(10, 130, 20) for y in (10, 60)]
    status, answer = function.call(tracker_body(video.frames[0], prompts, None))
    status, answer = function.call(tracker_body(video.frames[1], None, answer["states"]))
    assert status == 200 and len(answer["states"]) == 12
    assert stats() - before <= 2


def _sent(client) -> int:
    """Bytes Redis has sent so far (the next look-up's answer, about 1 KiB, counts too)."""
    return client.info("stats")["total_net_output_bytes"]


def _tracked_reading(functions: list, video, prompts: list, client) -> tuple[list, float]:
    """Shapes of frames 1-6 (functions taking frames in turn) and the bytes Redis sent per
    object-step from frame 3 on, once each function has seen the objects (the first step of an
    object on a replica reads it whole)."""
    status, answer = functions[0].call(tracker_body(video.frames[0], prompts, None))
    results = []
    for index in range(1, 7):
        if index == 3:
            before = _sent(client)
        function = functions[index % len(functions)]
        status, answer = function.call(tracker_body(video.frames[index], None, answer["states"]))
        assert status == 200, answer
        results.append(answer["shapes"])
    return results, (_sent(client) - before) / (4 * len(prompts))


def test_cached_steps_read_little_and_give_the_same_masks(with_redis, video):
    """One replica reads only headers; two alternating read what the other wrote; without the
    cache, whole states. The masks are the same, exactly, in all three."""
    client = with_redis.client()
    mask = video.masks[0]
    prompts = [
        {"type": "mask", "points": shapes.rle_from_mask(mask)},
        {"type": "polygon", "points": shapes.polygon_from_mask(mask, 1.0)},
    ]
    uncached = NuclioFunction("tracker")
    uncached.context.user_data.service.store.cache = StateCache(0)
    runs = {
        "one": [NuclioFunction("tracker")],
        "two": [NuclioFunction("tracker"), NuclioFunction("tracker")],
        "uncached": [uncached],
    }
    results, read = {}, {}
    for name, functions in runs.items():
        results[name], read[name] = _tracked_reading(functions, video, prompts, client)
    assert results["one"] == results["two"] == results["uncached"]
    entry = 64 * 16 * 16 * 2 + 256 * 4  # one memory frame (bfloat16) and its pointer at 256 px
    assert read["one"] <= 8 * 1024, read
    assert read["two"] <= entry + 8 * 1024, read
    assert read["uncached"] > 3 * entry, read  # the whole memory bank, every step


def test_a_retry_meeting_its_original_on_a_cold_replica_is_answered_as_the_first(
    with_redis, video, monkeypatch
):
    """A proxy's retry lands on a replica that never saw the object; it reads the header, then
    the original commits (its step deletes the memory it no longer reads) before the retry
    reads the fields. The retry is answered as the original was, not told the state expired."""
    original, cold = NuclioFunction("tracker"), NuclioFunction("tracker")
    status, answer = original.call(tracker_body(video.frames[0], [box_prompt(video)], None))
    for index in range(1, 7):  # the 7th step is the first to delete a memory frame
        status, answer = original.call(tracker_body(video.frames[index], None, answer["states"]))
    body = tracker_body(video.frames[7], None, answer["states"])
    store, client, first = cold.context.user_data.service.store, with_redis.client(), []
    key = store._key(parse_token(answer["states"][0])[0])
    opened = store.transaction

    @contextlib.contextmanager
    def original_commits_meanwhile(handles):
        with opened(handles) as tx:  # the headers are read: the original commits now
            if not first:
                assert client.hexists(key, "mem:1")
                first.append(original.call(body))
                assert not client.hexists(key, "mem:1")
            yield tx

    monkeypatch.setattr(store, "transaction", original_commits_meanwhile)
    status, again = cold.call(body)
    assert first[0][0] == 200, first
    assert (status, again) == first[0]


def test_a_lost_store_connection_is_a_503_to_run_again(with_redis, video):
    """Redis drops the request's WATCH connection while it steps: not a conflict (409, another
    request) but a 503 that says the step was not saved; running it again steps it."""
    reference = track_frames([NuclioFunction("tracker")], video, [box_prompt(video)], 2)
    function = NuclioFunction("tracker")
    status, answer = function.call(tracker_body(video.frames[0], [box_prompt(video)], None))
    body = tracker_body(video.frames[1], None, answer["states"])
    tracker = function.context.user_data.service.tracker
    original = tracker.step_many

    def connection_dropped(frame, tracked):
        assert with_redis.drop_watching() == 1
        return original(frame, tracked)

    tracker.step_many = connection_dropped
    status, lost = function.call(body)
    del tracker.step_many
    assert status == 503, lost
    assert "connection" in lost["message"] and "was not saved" in lost["message"]
    assert "Run it again" in lost["message"]
    status, again = function.call(body)
    assert status == 200 and again["shapes"] == reference[0]
    assert again["states"] == stepped(answer["states"])
