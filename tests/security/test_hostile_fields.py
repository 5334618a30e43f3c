"""Finding 1: one native message stopped the farm. A hello whose `version` is 2**64-1 (a msgpack
uint64 that does not fit int64) made the broker exit with 'bad variant access', taking every worker
with it. Every field is now checked on decode: such messages get `bad_request` and the farm serves on."""
import msgpack
import pytest
from native_raw import RawLocal, RawZmq, error_of

import gymfarm

HOSTILE_HELLOS = [
    {"version": 2**64 - 1},
    {"version": -(2**63)},
    {"version": 1.0},
    {"version": "1"},
    {"version": [1]},
    {"version": None},
    {"version": 1, "token": 2**64 - 1},
    {"version": 1, "token": ["x"]},
    {"version": 1, "token": {"a": 1}},
]


def hello_local_path(farm):
    with gymfarm.connect(farm.endpoint, local=False, token=farm.token or None) as c:
        return c.server["local"]


def serving(farm) -> bool:
    with gymfarm.connect(farm.endpoint, token=farm.token or None, local=False) as c:
        env = c.make("CartPole-v1")
        env.reset(seed=0)
        env.step(0)
        env.close()
        return c.ping()


@pytest.mark.parametrize("locked", [False, True], ids=["open", "token"])
def test_hostile_hello_fields_get_bad_request_and_the_farm_serves_on(start_farm, locked):
    farm = start_farm(workers=1, args=["--require-token"] if locked else [])
    workers = set(farm.worker_pids())
    path = hello_local_path(farm)
    for body in HOSTILE_HELLOS:
        if locked and "token" not in body:
            body = dict(body, token=farm.token)
        z = RawZmq(farm.endpoint)
        err = error_of(z.request(b"hello", body=body))
        assert err["code"] in ("bad_request", "unauthorized"), (body, err)
        z.close()
        link = RawLocal(path)
        err = error_of(link.request(b"hello", body=body))
        assert err["code"] in ("bad_request", "unauthorized"), (body, err)
        link.close()
    # bodies that are not maps at all, and not msgpack at all
    for raw in [msgpack.packb(2**64 - 1), msgpack.packb([1, 2]), b"\xc1", b"\xdd\xff\xff\xff\xff", b"\x91" * 5000]:
        z = RawZmq(farm.endpoint)
        assert error_of(z.request(b"hello", raw_body=raw))["code"] == "bad_request"
        z.close()
    assert farm.proc.poll() is None, farm.log()
    assert serving(farm)
    assert set(farm.worker_pids()) == workers  # no worker died with it
    assert "bad variant access" not in farm.log()


def test_hostile_bodies_on_every_verb(start_farm):
    farm = start_farm(workers=2)
    with gymfarm.connect(farm.endpoint, local=False) as c:
        env = c.make("CartPole-v1")
        env.reset(seed=0)
        iid = env.instance_id.encode()
        z = RawZmq(farm.endpoint)
        z.request(b"hello", body={"version": 1})
        weird = [2**64 - 1, -(2**63), [2**64 - 1], {"action": 2**64 - 1}, {"env_id": 2**64 - 1},
                 {"env_id": "CartPole-v1", "kwargs": 2**64 - 1}, {"actions": 2**64 - 1}, {"seed": 2**64 - 1},
                 {"seed": -1}, {"instances": [2**64 - 1]}]
        for verb in [b"make", b"reset", b"step", b"close", b"spaces", b"sample", b"render", b"call", b"step_vec",
                     b"step_batch", b"list", b"stats", b"ping", b"envs", b"bogus"]:
            for body in weird:
                frames = [verb, iid, b"\x01" * 8, msgpack.packb(body)]
                if verb == b"step_vec":
                    frames = [verb, b"", b"\x01" * 8, msgpack.packb(body), iid]
                if verb == b"step_batch":
                    frames = [verb, b"", b"\x01" * 8, iid, msgpack.packb(body)]
                z.send(frames)
                assert z.recv(30) is not None, (verb, body)
        z.close()
        assert farm.proc.poll() is None, farm.log()
        assert c.ping()
