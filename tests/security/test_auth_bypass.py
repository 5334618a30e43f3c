"""Finding 2: on a --require-token farm, step_batch and step_vec were dispatched before the token
check, so a client with no token stepped another client's instance. Every verb now passes one
check, before dispatch."""
import msgpack
import numpy as np
from native_raw import RawZmq, error_of

import gymfarm
from gymfarm import codec


def steps_of(client, instance_id):
    for w in client.stats()["workers"]:
        if instance_id in w["instances"]:
            return w["steps"]
    raise AssertionError("instance not found")


def test_every_verb_needs_the_token(start_farm):
    farm = start_farm(workers=2, args=["--require-token"])
    with gymfarm.connect(farm.endpoint, token=farm.token) as victim:
        env = victim.make("CartPole-v1")
        env.reset(seed=0)
        iid = env.instance_id.encode()
        before = steps_of(victim, env.instance_id)
        attacker = RawZmq(farm.endpoint)
        step_body = msgpack.packb({"action": 1})
        attempts = [
            [b"step_batch", b"", b"\x01" * 8, iid, step_body],
            [b"step_batch", b"", b"\x02" * 8, iid, step_body, iid, step_body],
            [b"step_vec", b"", b"\x03" * 8, codec.pack({"actions": np.array([1], dtype=np.int64)}), iid],
            [b"step", iid, b"\x04" * 8, step_body],
            [b"reset", iid, b"\x05" * 8, msgpack.packb({})],
            [b"close", iid, b"\x06" * 8, msgpack.packb({})],
            [b"list", b"", b"\x07" * 8, msgpack.packb({})],
            [b"stats", b"", b"\x08" * 8, msgpack.packb({})],
            [b"make", b"", b"\x09" * 8, msgpack.packb({"env_id": "CartPole-v1"})],
            [b"ping", b"", b"\x0a" * 8, b""],
        ]
        for frames in attempts:
            attacker.send(frames)
            reply = attacker.recv(10)
            assert reply is not None, frames[0]
            assert error_of(reply)["code"] == "unauthorized", frames[0]
        attacker.close()
        assert steps_of(victim, env.instance_id) == before  # nobody stepped it
        env.step(0)
        assert steps_of(victim, env.instance_id) == before + 1
        env.close()
