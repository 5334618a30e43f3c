"""Finding 3: authorization was keyed on the client's name, and a ZeroMQ client can choose its
routing id. With the id "\\0local1" it was taken for local-socket client 1: it inherited that
client's authorization, and with no token at all it could inject replies into that client's stream.
Keys are now made by the farm (path, connection id from the ZAP handler, then the peer's id)."""
import time

from native_raw import RawZmq, error_of

import gymfarm

LOCAL_NAMES = [b"\x00local" + str(i).encode() for i in range(1, 9)]


def test_a_zeromq_peer_cannot_answer_for_a_local_client(start_farm):
    farm = start_farm(workers=1)
    with gymfarm.connect(farm.endpoint) as victim:
        assert victim.is_local
        env = victim.make("CartPole-v1")
        env.reset(seed=0)
        attackers = [RawZmq(farm.endpoint, routing_id=name) for name in LOCAL_NAMES]
        for a in attackers:  # forged replies for the victim's next request ids, if they reached it
            for n in range(1, 200):
                a.send([b"bogus", b"", n.to_bytes(8, "little"), b""])
        for a in attackers:  # each attacker gets its own replies, all of them
            got = 0
            while got < 199:
                reply = a.recv(10)
                assert reply is not None, "the farm sent an attacker's replies elsewhere"
                assert error_of(reply)["code"] == "bad_request"
                got += 1
            a.close()
        time.sleep(0.2)
        for _ in range(20):
            env.step(0)
        assert victim.duplicate_replies == 0  # nothing was injected into its stream
        env.close()


def test_a_zeromq_peer_does_not_inherit_a_local_clients_token(start_farm):
    farm = start_farm(workers=1, args=["--require-token"])
    with gymfarm.connect(farm.endpoint, token=farm.token) as victim:
        assert victim.is_local
        env = victim.make("CartPole-v1")
        for name in LOCAL_NAMES:
            a = RawZmq(farm.endpoint, routing_id=name)
            reply = a.request(b"list")
            assert reply is not None, "the reply went to the local client"
            assert error_of(reply)["code"] == "unauthorized"
            a.close()
        assert victim.duplicate_replies == 0
        env.close()


def test_a_reused_routing_id_does_not_inherit_a_gone_clients_token(start_farm):
    farm = start_farm(workers=1, args=["--require-token"])
    victim = RawZmq(farm.endpoint, routing_id=b"victim")
    assert victim.request(b"hello", body={"version": 1, "token": farm.token})[1] == b"ok"
    assert victim.request(b"list", n=2)[1] == b"ok"
    victim.close()
    time.sleep(0.5)  # the victim's connection is gone; its routing id is free again
    attacker = RawZmq(farm.endpoint, routing_id=b"victim")
    for _ in range(50):  # until the farm has seen the old connection go
        reply = attacker.request(b"list")
        assert reply is not None
        if reply[1] == b"err":
            break
        time.sleep(0.1)
    assert error_of(reply)["code"] == "unauthorized"
    attacker.close()
