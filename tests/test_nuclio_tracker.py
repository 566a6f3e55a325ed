"""The Nuclio tracker, driven as Nuclio and CVAT drive it, with states in memory or a real Redis."""

from __future__ import annotations

import threading

import pytest
from nuclio_driver import NuclioFunction, box_prompt, stepped, track_frames, tracker_body

from tracker.cvat import shapes
from tracker.cvat.agent.tracking import create
from tracker.cvat.stores.state_store import parse_token
from tracker.devtools.agent_worker import AgentWorker

FRAMES = 8


def test_shapes_equal_the_agent_functions(environment, tiny_checkpoint, video):
    box, rle = box_prompt(video), shapes.rle_from_mask(video.masks[0])
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
        {"type": "rectangle", "points": box_prompt(video)},
    ]
    function = NuclioFunction("tracker")
    status, started = function.call(
        tracker_body(video.frames[0], typed + [box_prompt(video)], None)
    )
    assert status == 200 and started["shapes"] == typed + [box_prompt(video)]
    for answer in track_frames([function], video, typed + [box_prompt(video)], 3)[-1:]:
        assert [s["type"] for s in answer[:3]] == ["mask", "polygon", "rectangle"]
        assert isinstance(answer[3], list) and len(answer[3]) == 4  # legacy form answered alike


def test_restarted_function_continues_from_redis(with_redis, tiny_checkpoint, video):
    box = box_prompt(video)
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
        states = answer["states"]
        resumed.append(answer["shapes"])
    assert resumed == uninterrupted


def test_two_instances_alternating_equal_one(with_redis, tiny_checkpoint, video):
    box = box_prompt(video)
    one = track_frames([NuclioFunction("tracker")], video, [box], FRAMES)
    pair = [NuclioFunction("tracker"), NuclioFunction("tracker")]
    assert track_frames(pair, video, [box], FRAMES) == one


def test_in_memory_states_are_not_shared_between_instances(environment, tiny_checkpoint, video):
    a, b = NuclioFunction("tracker"), NuclioFunction("tracker")
    status, answer = a.call(tracker_body(video.frames[0], [box_prompt(video)], None))
    status, answer = b.call(tracker_body(video.frames[1], None, answer["states"]))
    assert status == 404 and "run the tracker again" in answer["message"]


def test_keys_expire_eight_hours_after_last_use(with_redis, tiny_checkpoint, video):
    function = NuclioFunction("tracker")
    status, answer = function.call(tracker_body(video.frames[0], [box_prompt(video)], None))
    store = function.context.user_data.service.store
    key = store._key(parse_token(answer["states"][0])[0])
    client = with_redis.client()
    assert 8 * 3600 - 5 <= client.ttl(key) <= 8 * 3600
    client.expire(key, 100)
    status, answer = function.call(tracker_body(video.frames[1], None, answer["states"]))
    assert client.ttl(key) > 8 * 3600 - 5, "a step renews the expiry"
    client.expire(key, 1)
    threading.Event().wait(1.5)
    status, answer = function.call(tracker_body(video.frames[2], None, answer["states"]))
    assert status == 404 and "expired" in answer["message"]


def test_a_step_writes_only_the_new_memory_frame(with_redis, tiny_checkpoint, video):
    function = NuclioFunction("tracker")
    status, answer = function.call(tracker_body(video.frames[0], [box_prompt(video)], None))
    states = answer["states"]
    client = with_redis.client()
    key = function.context.user_data.service.store._key(parse_token(states[0])[0])
    for index in range(1, 10):
        before = client.info("stats")["total_net_input_bytes"]
        status, answer = function.call(tracker_body(video.frames[index], None, states))
        states = answer["states"]
        written = client.info("stats")["total_net_input_bytes"] - before
        state_bytes = sum(len(value) for value in client.hgetall(key).values())
        entry = len(client.hget(key, f"mem:{index}")) + len(client.hget(key, f"ptr:{index}"))
        assert status == 200 and written < entry + 2048, (written, entry)
    assert written < state_bytes / 3
    fields = {f.decode() for f in client.hkeys(key)}
    assert {f for f in fields if f.startswith("mem:")} == {"mem:c"} | {
        f"mem:{i}" for i in range(4, 10)
    }, "only the newest 6 memory frames are kept"


def _two_at_once(function, bodies: list[dict], first: int | None = None) -> list:
    """Both requests read the state before either commits; with `first`, that one's answer
    comes before the other's step ends (so it commits first)."""
    tracker = function.context.user_data.service.tracker
    both_stepping = threading.Barrier(2, timeout=60)
    answered = threading.Event()
    original = tracker.step_many

    def step_together(frame, tracked):
        both_stepping.wait()
        if first is not None and threading.current_thread().name != f"slot {first}":
            assert answered.wait(60)
        return original(frame, tracked)

    tracker.step_many = step_together
    answers: list = [None, None]

    def run(slot):
        answers[slot] = function.call(bodies[slot])
        if slot == first:
            answered.set()

    threads = [threading.Thread(target=run, args=(slot,), name=f"slot {slot}") for slot in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    del tracker.step_many
    return answers


@pytest.fixture(params=["memory", "redis"])
def box_started(request, tiny_checkpoint, video):
    """A function with a box and a mask (whose answer shows a corrupted memory best) started
    on frame 0, their states, and the shapes of tracking them on frames 1 and 2 undisturbed."""
    request.getfixturevalue("with_redis" if request.param == "redis" else "environment")
    prompts = _box_and_mask(video)
    reference = track_frames([NuclioFunction("tracker")], video, prompts, 3)
    function = NuclioFunction("tracker")
    status, answer = function.call(tracker_body(video.frames[0], prompts, None))
    return function, answer["states"], reference


def _box_and_mask(video) -> list:
    return [box_prompt(video), {"type": "mask", "points": shapes.rle_from_mask(video.masks[0])}]


@pytest.mark.parametrize("winner", [0, 1], ids=["frame-1-wins", "frame-2-wins"])
def test_concurrent_steps_onto_two_frames_one_wins(box_started, video, winner):
    """Steps onto frames 1 and 2 at once: one is refused, and the object goes on from the
    winner's step uncorrupted, whichever wins (`winner`, made to commit first)."""
    function, states, _ = box_started
    frames = (1, 2)
    answers = _two_at_once(
        function, [tracker_body(video.frames[i], None, states) for i in frames], winner
    )
    assert sorted(status for status, _ in answers) == [200, 409]
    (loser,) = [a for s, a in answers if s == 409]
    assert "same time" in loser["message"]
    won = next(slot for slot, (s, _) in enumerate(answers) if s == 200)
    assert won == winner
    # Undisturbed: start on frame 0, step onto the winner's frame, then onto frame 3.
    alone = NuclioFunction("tracker")
    status, answer = alone.call(tracker_body(video.frames[0], _box_and_mask(video), None))
    expected = []
    for frame in (frames[won], 3):
        status, answer = alone.call(tracker_body(video.frames[frame], None, answer["states"]))
        expected.append(answer["shapes"])
    assert answers[won][1]["shapes"] == expected[0]
    status, answer = function.call(tracker_body(video.frames[3], None, stepped(states)))
    assert status == 200 and answer["shapes"] == expected[1], "the object was not corrupted"


def test_a_request_sent_twice_at_once_steps_once(box_started, video):
    """Both are answered 200 with the same shapes and states; the object moved one step."""
    function, states, reference = box_started
    body = tracker_body(video.frames[1], None, states)
    answers = _two_at_once(function, [body, body])
    assert [status for status, _ in answers] == [200, 200]
    assert answers[0][1] == answers[1][1]
    assert answers[0][1]["shapes"] == reference[0] and answers[0][1]["states"] == stepped(states)
    status, answer = function.call(tracker_body(video.frames[2], None, stepped(states)))
    assert status == 200 and answer["shapes"] == reference[1], "stepped once, not twice"


def test_redis_outage_is_a_clear_503_naming_the_host(environment, tmp_path, tiny_checkpoint, video):
    from tracker.devtools.redis_server import RedisServer

    server = RedisServer(tmp_path).start()
    for name, value in server.env.items():
        environment.setenv(name, value)
    try:
        function = NuclioFunction("tracker")
        status, answer = function.call(tracker_body(video.frames[0], [box_prompt(video)], None))
        states = answer["states"]
        assert function.call(tracker_body(video.frames[1], None, states))[0] == 200
        server.stop()
        status, answer = function.call(tracker_body(video.frames[2], None, states))
        assert status == 503 and f"127.0.0.1:{server.port}" in answer["message"]
        status, answer = function.call(tracker_body(video.frames[0], [box_prompt(video)], None))
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
    status, answer = function.call(
        tracker_body(video.frames[0], [mask, box_prompt(video), mask], None)
    )
    assert status == 200 and len(encoded) == 1
    status, answer = function.call(tracker_body(video.frames[1], None, answer["states"]))
    assert status == 200 and len(encoded) == 2


def test_a_dropped_state_names_the_variable_that_gives_states_more_memory(
    environment, tiny_checkpoint, video
):
    environment.setenv("SAM2_MAX_STATE_MEMORY_MB", "1")  # 40 objects just started take more
    function = NuclioFunction("tracker")
    status, answer = function.call(tracker_body(video.frames[0], [box_prompt(video)] * 40, None))
    assert status == 200, answer
    status, answer = function.call(tracker_body(video.frames[1], None, answer["states"][:1]))
    assert status == 410, answer
    assert "SAM2_MAX_STATE_MEMORY_MB=2" in answer["message"], answer["message"]
    assert "max_state_memory_mb" not in answer["message"]
