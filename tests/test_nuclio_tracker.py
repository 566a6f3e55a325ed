"""The Nuclio tracker, driven as Nuclio and CVAT drive it, with states in memory or a real Redis."""

from __future__ import annotations

import threading

import pytest
from nuclio_driver import NuclioFunction, track_frames, tracker_body

from tracker.cvat import shapes
from tracker.cvat.tracking import create
from tracker.devtools.agent_worker import AgentWorker

FRAMES = 8
ENV = {"SAM2_IMAGE_SIZE": "256", "SAM2_DEVICE": "cpu"}


@pytest.fixture()
def environment(monkeypatch):
    for name in ("CVAT_FUNCTIONS_REDIS_HOST", "CVAT_REDIS_HOST"):
        monkeypatch.delenv(name, raising=False)
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    return monkeypatch


@pytest.fixture()
def with_redis(environment, redis_server):
    for name, value in redis_server.env.items():
        environment.setenv(name, value)
    return redis_server


def _box(video) -> list[float]:
    x1, y1, x2, y2 = shapes.rectangle_from_mask(video.masks[0])
    return [x1 - 3, y1 - 3, x2 + 3, y2 + 3]


def test_shapes_equal_the_agent_functions(environment, tiny_checkpoint, video):
    box, rle = _box(video), shapes.rle_from_mask(video.masks[0])
    worker = AgentWorker(create(image_size=256, device="cpu"))
    state_ids = worker.init(video.image(0), ("rectangle", box), ("mask", rle))
    expected = []
    for index in range(1, FRAMES):
        rectangle, mask = worker.track(video.image(index), state_ids)
        expected.append([rectangle.points, {"type": "mask", "points": mask.points}])
    started = [box, {"type": "mask", "points": rle}]
    assert track_frames([NuclioFunction("tracker")], video, started, FRAMES) == expected


def test_masks_polygons_and_rectangles_answer_in_their_form(environment, tiny_checkpoint, video):
    mask = video.masks[0]
    typed = [
        {"type": "mask", "points": shapes.rle_from_mask(mask)},
        {"type": "polygon", "points": shapes.polygon_from_mask(mask, 1.0)},
        {"type": "rectangle", "points": _box(video)},
    ]
    function = NuclioFunction("tracker")
    status, started = function.call(tracker_body(video.frames[0], typed + [_box(video)], None))
    assert status == 200 and started["shapes"] == typed + [_box(video)]
    for answer in track_frames([function], video, typed + [_box(video)], 3)[-1:]:
        assert [s["type"] for s in answer[:3]] == ["mask", "polygon", "rectangle"]
        assert isinstance(answer[3], list) and len(answer[3]) == 4  # legacy form answered alike


def test_restarted_function_continues_from_redis(with_redis, tiny_checkpoint, video):
    box = _box(video)
    uninterrupted = track_frames([NuclioFunction("tracker")], video, [box], FRAMES)
    first = NuclioFunction("tracker")
    status, answer = first.call(tracker_body(video.frames[0], [box], None))
    states = answer["states"]
    resumed = []
    for index in range(1, FRAMES):
        if index == 4:
            first = NuclioFunction("tracker")  # the function restarts: a new process, new model
        status, answer = first.call(tracker_body(video.frames[index], None, states))
        assert status == 200, answer
        resumed.append(answer["shapes"])
    assert resumed == uninterrupted


def test_two_instances_alternating_equal_one(with_redis, tiny_checkpoint, video):
    box = _box(video)
    one = track_frames([NuclioFunction("tracker")], video, [box], FRAMES)
    pair = [NuclioFunction("tracker"), NuclioFunction("tracker")]
    assert track_frames(pair, video, [box], FRAMES) == one


def test_in_memory_states_are_not_shared_between_instances(environment, tiny_checkpoint, video):
    a, b = NuclioFunction("tracker"), NuclioFunction("tracker")
    status, answer = a.call(tracker_body(video.frames[0], [_box(video)], None))
    status, answer = b.call(tracker_body(video.frames[1], None, answer["states"]))
    assert status == 404 and "run the tracker again" in answer["message"]


def test_keys_expire_eight_hours_after_last_use(with_redis, tiny_checkpoint, video):
    function = NuclioFunction("tracker")
    status, answer = function.call(tracker_body(video.frames[0], [_box(video)], None))
    store = function.context.user_data.service.store
    key = store._key(answer["states"][0])
    client = with_redis.client()
    assert 8 * 3600 - 5 <= client.ttl(key) <= 8 * 3600
    client.expire(key, 100)
    function.call(tracker_body(video.frames[1], None, answer["states"]))
    assert client.ttl(key) > 8 * 3600 - 5, "a step renews the expiry"
    client.expire(key, 1)
    threading.Event().wait(1.5)
    status, answer = function.call(tracker_body(video.frames[2], None, answer["states"]))
    assert status == 404 and "expired" in answer["message"]


def test_a_step_writes_only_the_new_memory_frame(with_redis, tiny_checkpoint, video):
    function = NuclioFunction("tracker")
    status, answer = function.call(tracker_body(video.frames[0], [_box(video)], None))
    states = answer["states"]
    client = with_redis.client()
    key = function.context.user_data.service.store._key(states[0])
    for index in range(1, 10):
        before = client.info("stats")["total_net_input_bytes"]
        status, _ = function.call(tracker_body(video.frames[index], None, states))
        written = client.info("stats")["total_net_input_bytes"] - before
        state_bytes = sum(len(value) for value in client.hgetall(key).values())
        entry = len(client.hget(key, f"mem:{index}")) + len(client.hget(key, f"ptr:{index}"))
        assert status == 200 and written < entry + 2048, (written, entry)
    assert written < state_bytes / 3
    fields = {f.decode() for f in client.hkeys(key)}
    assert {f for f in fields if f.startswith("mem:")} == {"mem:c"} | {
        f"mem:{i}" for i in range(4, 10)
    }, "only the newest 6 memory frames are kept"


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_concurrent_steps_of_one_object_one_wins(request, store, tiny_checkpoint, video):
    request.getfixturevalue("with_redis" if store == "redis" else "environment")
    box = _box(video)
    reference = track_frames([NuclioFunction("tracker")], video, [box], 3)
    function = NuclioFunction("tracker")
    status, answer = function.call(tracker_body(video.frames[0], [box], None))
    states = answer["states"]
    tracker = function.context.user_data.service.tracker
    both_stepping = threading.Barrier(2, timeout=60)
    original = tracker.step_many

    def step_together(frame, tracked):
        both_stepping.wait()  # both requests have read the state before either commits
        return original(frame, tracked)

    tracker.step_many = step_together
    answers = [None, None]

    def run(slot):
        answers[slot] = function.call(tracker_body(video.frames[1], None, states))

    threads = [threading.Thread(target=run, args=(slot,)) for slot in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    del tracker.step_many
    assert sorted(status for status, _ in answers) == [200, 409]
    (winner,) = [a for s, a in answers if s == 200]
    (loser,) = [a for s, a in answers if s == 409]
    assert winner["shapes"] == reference[0] and "same time" in loser["message"]
    status, answer = function.call(tracker_body(video.frames[2], None, states))
    assert status == 200 and answer["shapes"] == reference[1], "the object was not corrupted"


def test_redis_outage_is_a_clear_503_naming_the_host(environment, tmp_path, tiny_checkpoint, video):
    from tracker.devtools.redis_server import RedisServer

    server = RedisServer(tmp_path).start()
    for name, value in server.env.items():
        environment.setenv(name, value)
    try:
        function = NuclioFunction("tracker")
        status, answer = function.call(tracker_body(video.frames[0], [_box(video)], None))
        states = answer["states"]
        assert function.call(tracker_body(video.frames[1], None, states))[0] == 200
        server.stop()
        status, answer = function.call(tracker_body(video.frames[2], None, states))
        assert status == 503 and f"127.0.0.1:{server.port}" in answer["message"]
        status, answer = function.call(tracker_body(video.frames[0], [_box(video)], None))
        assert status == 503 and "Redis" in answer["message"]
        server.start()  # back, but empty (no persistence here): the state is gone, clearly
        status, answer = function.call(tracker_body(video.frames[3], None, states))
        assert status == 404 and "run the tracker again" in answer["message"]
    finally:
        server.stop()


def test_one_image_decode_and_encoder_pass_per_request(environment, tiny_checkpoint, video):
    function = NuclioFunction("tracker")
    service = function.context.user_data.service
    encoded, original = [], service.tracker.encode
    service.tracker.encode = lambda image: encoded.append(image) or original(image)
    mask = {"type": "mask", "points": shapes.rle_from_mask(video.masks[0])}
    status, answer = function.call(tracker_body(video.frames[0], [mask, _box(video), mask], None))
    assert status == 200 and len(encoded) == 1
    status, answer = function.call(tracker_body(video.frames[1], None, answer["states"]))
    assert status == 200 and len(encoded) == 2


def test_a_dropped_state_names_the_variable_that_gives_states_more_memory(
    environment, tiny_checkpoint, video
):
    environment.setenv("SAM2_MAX_STATE_MEMORY_MB", "1")  # 40 objects just started take more
    function = NuclioFunction("tracker")
    status, answer = function.call(tracker_body(video.frames[0], [_box(video)] * 40, None))
    assert status == 200, answer
    status, answer = function.call(tracker_body(video.frames[1], None, answer["states"][:1]))
    assert status == 410, answer
    assert "SAM2_MAX_STATE_MEMORY_MB=2" in answer["message"], answer["message"]
    assert "max_state_memory_mb" not in answer["message"]
