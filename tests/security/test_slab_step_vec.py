"""A vector step posted in a slab (STEP_VEC, docs/protocol.md "Shared memory") names the instances
it steps. The worker runs it only when every one of them has a slab there granted to the session
that holds the slab it was posted in: a client cannot step, or read, another session's env on the
same worker by naming it, not even a shared one."""
import numpy as np
import pytest

from gymfarm import codec, slab


def _vec_body(instances, actions):
    return codec.pack({"instances": list(instances), "actions": np.asarray(actions, dtype=np.int64)})


def _posted(shared, body):
    assert shared.post(slab.STEP_VEC, body)
    return shared.wait(10.0, lambda: None)


@pytest.mark.parametrize("shared_victim", [False, True])
def test_a_step_vec_naming_another_sessions_env_is_refused_and_runs_nothing(start_farm, shared_victim):
    f = start_farm(workers=1, args=["--envs-per-worker", "4", "--max-workers", "1"])  # one worker: all envs together
    with f.connect(name="attacker") as attacker, f.connect(name="victim") as victim:
        mine, my_slab = attacker.make_instance({"env_id": "CartPole-v1"})
        theirs, their_slab = victim.make_instance({"env_id": "CartPole-v1", "shared": shared_victim})
        twin, _ = victim.make_instance({"env_id": "CartPole-v1"})
        assert my_slab is not None and their_slab is not None
        for iid in (mine["instance_id"], theirs["instance_id"], twin["instance_id"]):
            (attacker if iid == mine["instance_id"] else victim).call("reset", iid, {"seed": 4})
        steps_before = sum(w["steps"] for w in attacker.stats()["workers"])

        # its own env through its own slab: served
        status, data = _posted(my_slab, _vec_body([mine["instance_id"]], [1]))
        assert status == slab.OK
        assert codec.unpack(data)["obs"].shape == (1, 4)
        # the victim's env, alone or beside its own: refused, nothing run
        for names in ([theirs["instance_id"]], [mine["instance_id"], theirs["instance_id"]],
                      [theirs["instance_id"], mine["instance_id"]]):
            status, data = _posted(my_slab, _vec_body(names, [0] * len(names)))
            assert status == slab.REFUSED
        assert sum(w["steps"] for w in attacker.stats()["workers"]) == steps_before + 1
        # the victim's env did not move: its next step is its twin's first
        got = victim.call("step", theirs["instance_id"], {"action": 0})
        want = victim.call("step", twin["instance_id"], {"action": 0})
        assert np.array_equal(got["obs"], want["obs"])
        # the same request over the socket is the broker's to judge: the victim's unshared env is not
        # the attacker's to use there either
        if not shared_victim:
            reply = attacker._wait([t := attacker._send([b"step_vec", b"", b"", _vec_body([], [0]),
                                                           theirs["instance_id"].encode()])], 10.0)[t]
            assert reply[1] == b"ok"
            assert reply[3] == b"err" and codec.unpack(reply[4])["code"] == "unknown_instance"


def test_a_body_that_names_its_instances_twice_runs_only_what_was_checked(start_farm):
    f = start_farm(workers=1, args=["--envs-per-worker", "4", "--max-workers", "1"])
    with f.connect(name="attacker") as attacker, f.connect(name="victim") as victim:
        mine, my_slab = attacker.make_instance({"env_id": "CartPole-v1"})
        theirs, _ = victim.make_instance({"env_id": "CartPole-v1"})
        twin, _ = victim.make_instance({"env_id": "CartPole-v1"})
        for conn, iid in ((attacker, mine), (victim, theirs), (victim, twin)):
            conn.call("reset", iid["instance_id"], {"seed": 4})
        # {instances: [mine], actions, instances: [theirs]}: a map a decoder may read either way
        body = (b"\x83" + codec.pack("instances") + codec.pack([mine["instance_id"]])
                + codec.pack("actions") + codec.pack(np.zeros(1, dtype=np.int64))
                + codec.pack("instances") + codec.pack([theirs["instance_id"]]))
        status, data = _posted(my_slab, body)
        if status == slab.OK:  # served: then as the list the check saw, the attacker's own env
            assert codec.unpack(data)["obs"].shape == (1, 4)
        else:
            assert status == slab.REFUSED
        got = victim.call("step", theirs["instance_id"], {"action": 0})
        want = victim.call("step", twin["instance_id"], {"action": 0})
        assert np.array_equal(got["obs"], want["obs"])  # the victim's env did not move


def test_no_vector_step_runs_through_a_shared_envs_slab(start_farm):
    """Another session may fetch a shared env's kept (spilled) replies, so a shared env's slab never
    carries a vector step, whose reply would hold its session's other envs."""
    f = start_farm(workers=1, args=["--envs-per-worker", "4", "--max-workers", "1"])
    with f.connect() as owner:
        shared, shared_slab = owner.make_instance({"env_id": "CartPole-v1", "shared": True})
        private, private_slab = owner.make_instance({"env_id": "CartPole-v1"})
        for iid in (shared["instance_id"], private["instance_id"]):
            owner.call("reset", iid, {"seed": 1})
        for posted_in, names in ((shared_slab, [shared["instance_id"]]),
                                 (shared_slab, [shared["instance_id"], private["instance_id"]]),
                                 (private_slab, [private["instance_id"], shared["instance_id"]])):
            status, _ = _posted(posted_in, _vec_body(names, [0] * len(names)))
            assert status == slab.REFUSED
        status, _ = _posted(private_slab, _vec_body([private["instance_id"]], [0]))
        assert status == slab.OK
