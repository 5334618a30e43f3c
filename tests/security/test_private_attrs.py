"""Finding: get_attr/set_attr/call refuse names starting with '_', but call("get_wrapper_attr",
["_np_random"]) and call("set_wrapper_attr", ...) passed the private name as an argument and got
past the rule. Now every attribute name a client gives, including the name arguments of the
methods that take one (worker/host.py _NAME_TAKING), goes through one check."""
import pytest
from native_raw import call_method

import gymfarm


@pytest.fixture
def env(one_env):
    return one_env("CartPole-v1")


call = call_method


@pytest.mark.parametrize("name,args,kwargs", [
    ("get_wrapper_attr", ["_np_random"], {}),
    ("get_wrapper_attr", [], {"name": "_np_random"}),
    ("has_wrapper_attr", ["_np_random"], {}),
    ("set_wrapper_attr", ["_np_random", 1], {}),
    ("set_wrapper_attr", [], {"name": "_np_random", "value": 1}),
    ("set_wrapper_attr", ["__class__", 1], {}),
    ("get_wrapper_attr", [b"_np_random"], {}),  # not even as bytes
    ("__getattribute__", ["_np_random"], {}),
    ("_np_random", [], {}),
])
def test_private_names_are_refused_however_they_are_passed(env, name, args, kwargs):
    with pytest.raises(gymfarm.BadRequest, match="attribute name"):
        call(env, name, args, kwargs)
    # the env's private state is untouched: it still steps
    env.step(0)


def test_direct_verbs_refuse_private_names(env):
    with pytest.raises(gymfarm.BadRequest, match="attribute name"):
        env._call("get_attr", {"name": "_np_random"})
    with pytest.raises(gymfarm.BadRequest, match="attribute name"):
        env._call("set_attr", {"name": "_np_random", "value": 1})


def test_public_names_still_work_through_every_path(env):
    assert call(env, "get_wrapper_attr", ["gravity"]) == 9.8
    assert call(env, "has_wrapper_attr", ["gravity"]) is True
    call(env, "set_wrapper_attr", ["gymfarm_mark", 7])
    assert env._call("get_attr", {"name": "gymfarm_mark"})["value"] == 7
    assert call(env, "get_wrapper_attr", [], {"name": "gymfarm_mark"}) == 7
