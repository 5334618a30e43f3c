"""Finding: make's path check looked at str values only, so a path sent as bytes (msgpack bin),
or hidden in a dict key, reached the env's constructor. Now every value at any depth (lists,
tuples, dict keys and values) that is a str, bytes, bytearray or os.PathLike goes through the same
check (worker/host.py _check_kwargs)."""
import pytest

import gymfarm

ENV = "gymfarm_test/KwargsRecorder-v0"


def make(farm, kwargs):
    return farm.call("make", body={"env_id": ENV, "kwargs": kwargs})


@pytest.fixture
def farm(start_farm):
    f = start_farm(workers=1)
    with f.connect() as c:
        yield c


@pytest.mark.parametrize("kwargs", [
    {"log": b"/etc/passwd"},
    {"log": b"~/.ssh/authorized_keys"},
    {"log": b"..\\\\windows"},
    {"files": [b"ok", b"/tmp/x"]},
    {"nested": {"deeper": [{"path": b"/var/tmp/out"}]}},
    {"table": {"/etc/shadow": 1}},   # a dict key
    {"log": "/etc/passwd"},          # str: refused before and after
], ids=["bytes", "bytes-home", "bytes-backslash", "list", "nested", "str-key", "str"])
def test_path_like_kwargs_are_refused(farm, kwargs):
    with pytest.raises(gymfarm.BadRequest, match="looks like a path"):
        make(farm, kwargs)
    assert farm.stats()["workers"][0]["instances"] in ([], None)  # nothing was built


def test_kwargs_without_paths_reach_the_env(farm):
    reply = make(farm, {"name": b"plain", "sizes": [1, 2], "table": {"a": "b"}})
    iid = reply["instance_id"]
    received = farm.call("get_attr", iid, {"name": "received"})["value"]
    assert received == {"name": b"plain", "sizes": [1, 2], "table": {"a": "b"}}
    farm.call("close", iid)
