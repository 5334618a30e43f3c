"""Finding (new surface): get_attr/set_attr/call take dotted paths ("ale.lives") so client-side
Atari wrappers can reach an emulator handle. A path must not become a way around the make-kwargs
allow-list or into code objects: it goes through plain objects only, never through a module, a
class, a function or method, or an env spec (spec.make() would build an env with any kwargs)."""
import pytest
from native_raw import call_method

import gymfarm


@pytest.fixture
def env(one_env):
    return one_env("gymfarm_test/AtariLike-v0")


call = call_method


@pytest.mark.parametrize("verb,body", [
    ("call", {"name": "spec.make", "kwargs": {"render_mode": "human"}}),
    ("call", {"name": "unwrapped.spec.make"}),
    ("get_attr", {"name": "spec.kwargs"}),
    ("call", {"name": "step.func"}),
    ("get_attr", {"name": "get_action_meanings.im_self"}),
    ("set_attr", {"name": "spec.max_episode_steps", "value": 1}),
    ("get_attr", {"name": "ale.lives.x"}),
    ("get_attr", {"name": "ale._remaining"}),
    ("set_attr", {"name": "ale.__class__", "value": 1}),
])
def test_paths_through_specs_code_or_private_names_are_refused(env, verb, body):
    with pytest.raises(gymfarm.BadRequest):
        env._call(verb, body)
    assert call(env, "ale.lives") == 3  # a path through a plain object still works
    env.step(0)
