"""A make that finds the pool at --max-workers still learns first what is wrong with its env id
or its parameters, as on a farm with room (Gymie checks the id before anything else): the zygote
judges the id (docs/operations.md "The pool"). Only an id that resolves gets capacity_exhausted."""
import json

import gymnasium as gym
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

import gymfarm


def gymie_close(url, params):
    """The close code and reason a Gymie make gets, or ("frame", text) for a reply."""
    with connect(url, open_timeout=10, close_timeout=5) as ws:
        try:
            ws.send(json.dumps({"method": "make", "params": params}))
            return ("frame", ws.recv(timeout=30))
        except ConnectionClosed as e:
            return (e.rcvd.code, e.rcvd.reason) if e.rcvd else ("no close frame", "")


GYMIE_CASES = [
    {"env_id": "NotFound-v1"},
    {"env_id": "CartPole-v9"},
    {"env_id": "bad string"},
    {"env_id": "malformed"},
    {"env_id": "CartPole-v1", "foo": 1},
]


@pytest.fixture(scope="module")
def answers_with_room(tmp_path_factory):
    from farm_fixture import FarmProcess

    f = FarmProcess(tmp_path_factory.mktemp("room"), workers=1)
    try:
        yield [gymie_close(f.gymie_url, p) for p in GYMIE_CASES]
    finally:
        assert f.stop() == 0


def test_gymie_at_max_workers_answers_a_bad_id_as_with_room(start_farm, answers_with_room):
    farm = start_farm(workers=1, args=["--max-workers", "1"])
    with farm.connect() as c:
        held = c.make("CartPole-v1")  # the pool is full now
        full = [gymie_close(farm.gymie_url, p) for p in GYMIE_CASES]
        assert full == answers_with_room
        assert full[0] == (1007, "Environment `NotFound-v1` not found")
        assert full[4] == (1007, "Parameters `{'env_id': 'CartPole-v1', 'foo': 1}` are wrong")
        # a good id still gets the capacity answer (Gymie's unknown-error close), not a frame
        code, reason = gymie_close(farm.gymie_url, {"env_id": "CartPole-v1"})
        assert code != "frame" and "--max-workers" in reason, (code, reason)
        held.close()
        assert gymie_close(farm.gymie_url, {"env_id": "CartPole-v1"})[0] == "frame"  # room again


def test_native_at_max_workers_raises_what_in_process_make_raises(start_farm):
    farm = start_farm(workers=1, args=["--max-workers", "1"])
    with farm.connect() as c:
        held = c.make("CartPole-v1")
        for env_id, error in [("Nope-v0", gym.error.NameNotFound), ("CartPole-v9", gym.error.VersionNotFound),
                              ("Nope/CartPole-v1", gym.error.NamespaceNotFound)]:
            with pytest.raises(error) as local:
                gym.make(env_id)
            with pytest.raises(error) as remote:
                c.make(env_id)
            assert str(remote.value) == str(local.value)
        with pytest.raises(gymfarm.CapacityExhausted, match="--max-workers 1"):
            c.make("CartPole-v1")
        assert c.stats()["pool"]["live"] == 1 and len(c.list()) == 1  # nothing was left behind
        held.close()
