"""Small envs of the project's own, registered under ``gymfarm_test/``.

They cover the spaces the classic envs do not (Dict, Text, MultiBinary, MultiDiscrete) and the
failures the farm must survive (raise, segfault, hang). A farm serves them with
``gymfarm start --import gymfarm_testenvs`` and ``PYTHONPATH=tests/support``.
"""
import ctypes
import os
import re
import time

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.envs.classic_control.cartpole import CartPoleEnv

# A worker that imports this module while the file named here exists crashes at start-up (the
# restart-budget tests create and remove the file while the farm runs).
_crash_flag = os.environ.get("GYMFARM_TEST_CRASH_AT_START")
if _crash_flag and os.path.exists(_crash_flag):
    import signal

    os.kill(os.getpid(), signal.SIGSEGV)


class _Counting(gym.Env):
    """Shared skeleton: episodes of ``length`` steps, reward = step index."""

    metadata = {"render_modes": ["rgb_array", "ansi"], "render_fps": 4}
    length = 10

    def __init__(self, render_mode=None):
        self.render_mode = render_mode
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {"t": self.t}

    def global_random(self):
        """A draw from NumPy's global RNG (workers forked from one zygote must not share it)."""
        return float(np.random.random())

    def step(self, action):
        self.t += 1
        return self._obs(), float(self.t), self.t >= self.length, False, {"t": self.t, "action": action}

    def close(self):
        log = os.environ.get("GYMFARM_TEST_CLOSE_LOG")
        if log:
            with open(log, "a") as f:
                f.write(f"closed {type(self).__name__} in {os.getpid()}\n")

    def render(self):
        if self.render_mode == "rgb_array":
            frame = np.zeros((8, 12, 3), dtype=np.uint8)
            frame[:, : self.t % 12, 0] = 255
            return frame
        if self.render_mode == "ansi":
            return f"t={self.t}\n"
        return None


class DictObs(_Counting):
    observation_space = spaces.Dict({
        "position": spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float64),
        "mode": spaces.Discrete(3, start=1),
        "flags": spaces.MultiBinary(4),
    })
    action_space = spaces.Dict({"move": spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32),
                                "pick": spaces.Discrete(2)})

    def _obs(self):
        return {"position": self.np_random.normal(size=2), "mode": int(self.np_random.integers(1, 4)),
                "flags": self.np_random.integers(0, 2, size=4).astype(np.int8)}


class TextObs(_Counting):
    observation_space = spaces.Text(max_length=12, min_length=1, charset="abcdef")
    action_space = spaces.Text(max_length=4, min_length=1, charset="xyz")

    def _obs(self):
        n = int(self.np_random.integers(1, 13))
        return "".join(self.np_random.choice(list("abcdef"), size=n))


class MultiBinaryEnv(_Counting):
    observation_space = spaces.MultiBinary([2, 3])
    action_space = spaces.MultiBinary(5)

    def _obs(self):
        return self.np_random.integers(0, 2, size=(2, 3)).astype(np.int8)


class MultiDiscreteEnv(_Counting):
    observation_space = spaces.MultiDiscrete([[3, 4], [5, 6]], dtype=np.int32)
    action_space = spaces.MultiDiscrete([2, 7], start=[-1, 0])

    def _obs(self):
        return (self.np_random.integers(0, [[3, 4], [5, 6]])).astype(np.int32)


class TupleObs(_Counting):
    observation_space = spaces.Tuple((spaces.Discrete(5), spaces.Box(0, 255, shape=(2, 2), dtype=np.uint8)))
    action_space = spaces.Discrete(3)

    def _obs(self):
        return (int(self.np_random.integers(0, 5)), self.np_random.integers(0, 256, size=(2, 2)).astype(np.uint8))


class Faulty(_Counting):
    """Action 0 steps normally; 1 raises; 2 segfaults the process; 3 hangs in C holding the GIL;
    4 allocates 4 GB; 5 returns a NaN observation and an infinite reward; 6 returns a 100 MB
    observation."""

    observation_space = spaces.Box(0.0, 100.0, shape=(1,), dtype=np.float32)
    action_space = spaces.Discrete(7)
    length = 1000

    def _obs(self):
        return np.array([self.t], dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        if options and options.get("raise"):
            raise RuntimeError("reset was asked to fail")
        return super().reset(seed=seed, options=options)

    def step(self, action):
        if action == 1:
            raise ValueError(f"boom at t={self.t}")
        if action == 2:
            ctypes.string_at(0)  # reads address 0: SIGSEGV
        if action == 3:
            re.match(r"(a+)+$", "a" * 64 + "b")  # catastrophic backtracking inside the C regex engine
        if action == 4:
            np.ones(1 << 29)  # 4 GB of float64
        if action == 5:
            obs, _, term, trunc, info = super().step(action)
            return np.array([np.nan], dtype=np.float32), float("inf"), term, trunc, info
        if action == 6:
            _, reward, term, trunc, info = super().step(action)
            return np.zeros(25_000_000, dtype=np.float32), reward, term, trunc, info
        return super().step(action)


class Heavy(CartPoleEnv):
    """CartPole whose every step also burns about 500 µs of CPU (benchmark P6)."""

    work = 500e-6

    def step(self, action):
        end = time.perf_counter() + self.work
        while time.perf_counter() < end:
            pass
        return super().step(action)


class BrokenMake(gym.Env):
    observation_space = spaces.Discrete(2)
    action_space = spaces.Discrete(2)

    def __init__(self):
        raise RuntimeError("this env cannot be constructed")


_ENVS = {
    "DictObs-v0": DictObs, "TextObs-v0": TextObs, "MultiBinary-v0": MultiBinaryEnv,
    "MultiDiscrete-v0": MultiDiscreteEnv, "TupleObs-v0": TupleObs, "Faulty-v0": Faulty, "BrokenMake-v0": BrokenMake,
    "Heavy-v0": Heavy,
}

for _name, _cls in _ENVS.items():
    _id = f"gymfarm_test/{_name}"
    if _id not in gym.registry:
        steps = None if _cls is Faulty else 500 if _cls is Heavy else 50
        gym.register(id=_id, entry_point=_cls, max_episode_steps=steps)


class BigInfo(_Counting):
    """Ints beyond 64 bits in the info: action 0 puts 2**200, -(2**200) and 2**64 - 1 there;
    action 1 an int of 5001 digits, more than Python converts to text (so the wire cannot carry it);
    action 2 none (Gymnasium's vector envs cannot stack ints beyond 64 bits into their infos)."""

    observation_space = spaces.Box(0.0, 1000.0, shape=(1,), dtype=np.float32)
    action_space = spaces.Discrete(3)
    length = 1000

    def _obs(self):
        return np.array([self.t], dtype=np.float32)

    def step(self, action):
        obs, reward, term, trunc, info = super().step(action)
        if action == 1:
            info["huge"] = 10 ** 5000
        elif action == 0:
            info.update(big=2 ** 200, negative=-(2 ** 200), u64max=2 ** 64 - 1)
        return obs, reward, term, trunc, info

    def nested(self, depth):
        """A list nested ``depth`` deep (past the codec's depth limit for depth > 64)."""
        v = []
        for _ in range(int(depth)):
            v = [v]
        return v

    def lone_surrogate(self):
        """A str that is not valid UTF-8 (it cannot be sent)."""
        return "bad \udc80 text"


class Forker(_Counting):
    """Env code that starts a process of its own: ``spawn_sleeper(seconds)`` forks a child that
    sleeps and exits, and returns its pid; the child holds whatever descriptors the worker held."""

    observation_space = spaces.Discrete(2)
    action_space = spaces.Discrete(2)

    def _obs(self):
        return 0

    def spawn_sleeper(self, seconds):
        pid = os.fork()
        if pid == 0:
            try:
                time.sleep(float(seconds))
            finally:
                os._exit(0)
        return pid


class KwargsRecorder(_Counting):
    """Takes any make parameters and keeps them in ``received`` (what a client's kwargs reach)."""

    observation_space = spaces.Discrete(2)
    action_space = spaces.Discrete(2)

    def __init__(self, render_mode=None, **kwargs):
        super().__init__(render_mode=render_mode)
        self.received = kwargs

    def _obs(self):
        return 0


for _name, _cls in {"BigInfo-v0": BigInfo, "Forker-v0": Forker, "KwargsRecorder-v0": KwargsRecorder}.items():
    _id = f"gymfarm_test/{_name}"
    if _id not in gym.registry:
        gym.register(id=_id, entry_point=_cls, max_episode_steps=50)


class ActionEcho(_Counting):
    """Reports in its info the action exactly as ``step`` received it: type, dtype and bytes."""

    observation_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
    action_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)

    def _obs(self):
        return np.zeros(2, dtype=np.float32)

    def step(self, action):
        obs, reward, terminated, truncated, _ = super().step(action)
        info = {"type": type(action).__name__}
        if isinstance(action, np.ndarray):
            info.update(dtype=action.dtype.str, bytes=action.tobytes())
        return obs, reward, terminated, truncated, info


class AtariLike(_Counting):
    """What client-side Atari wrappers ask of an env: action meanings, a frameskip attribute, an
    ``ale`` lives counter; a warning on every reset and a tuple in every info."""

    observation_space = spaces.Box(0, 255, shape=(4,), dtype=np.uint8)
    action_space = spaces.Discrete(4)

    class _Ale:
        """An emulator handle: an object that cannot travel, with methods of its own."""

        def __init__(self):
            self.remaining = 3

        def lives(self):
            return self.remaining

    def __init__(self, render_mode=None, frameskip=4):
        super().__init__(render_mode=render_mode)
        self.frameskip = frameskip
        self.ale = AtariLike._Ale()

    def get_action_meanings(self):
        return ["NOOP", "FIRE", "RIGHT", "LEFT"]

    def reset(self, *, seed=None, options=None):
        import warnings

        warnings.warn("AtariLike reset warning", UserWarning, stacklevel=2)
        obs, info = super().reset(seed=seed, options=options)
        info["pair"] = (1, "a")
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        info["pair"] = (self.t, (2.5, "b"))
        return obs, reward, terminated, truncated, info

    def _obs(self):
        return np.full(4, self.t, dtype=np.uint8)


class AtariScreen(AtariLike):
    """AtariLike with a screen: ``ale.getScreenRGB(buf)`` and ``ale.getScreenGrayscale(buf)`` fill
    the array they are given in place, as ale-py's do (what gymnasium's AtariPreprocessing calls),
    with a frame that depends on the step count and the last action. ``_frameskip`` is 1, as an
    ALE env made with frameskip=1 has it. Each reset draws a random start from the env's generator
    (as ALE's reset and CartPole's do), so the generator's state is the env's own."""

    observation_space = spaces.Box(0, 255, shape=(21, 16, 3), dtype=np.uint8)

    class _Screen(AtariLike._Ale):
        def __init__(self, env):
            super().__init__()
            self.env = env

        def getScreenRGB(self, out=None):  # noqa: N802  (ale-py's names)
            frame = self.env._frame()
            if out is None:
                return frame
            if not isinstance(out, np.ndarray) or out.shape != frame.shape or not out.flags.writeable:
                raise TypeError(f"getScreenRGB needs a writable {frame.shape} array")
            out[...] = frame
            return out

        def getScreenGrayscale(self, out=None):  # noqa: N802
            gray = self.env._frame()[..., 0]
            if out is None:
                return gray
            if not isinstance(out, np.ndarray) or out.shape != gray.shape or not out.flags.writeable:
                raise TypeError(f"getScreenGrayscale needs a writable {gray.shape} array")
            np.copyto(out, gray)
            return out

    def __init__(self, render_mode=None, frameskip=1):
        super().__init__(render_mode=render_mode, frameskip=frameskip)
        self._frameskip = frameskip
        self.ale = AtariScreen._Screen(self)
        self.last_action = 0

    def reset(self, *, seed=None, options=None):
        obs, info = super().reset(seed=seed, options=options)
        self.offset = int(self.np_random.integers(0, 50))  # a random start, drawn from the env's generator
        return self._obs(), info

    def step(self, action):
        self.last_action = int(action)
        return super().step(action)

    def draw(self):
        """A draw from the env's own generator (what a wrapper drawing from np_random shares)."""
        return int(self.np_random.integers(1 << 30))

    def _frame(self):
        ys, xs = np.mgrid[0:21, 0:16]
        base = (ys * 7 + xs * 3 + self.t * 11 + self.last_action * 40 + getattr(self, "offset", 0)) % 256
        return np.stack([base, (base * 3) % 256, 255 - base], axis=-1).astype(np.uint8)

    def _obs(self):
        return self._frame()


class GraphObs(_Counting):
    observation_space = spaces.Graph(node_space=spaces.Box(-1.0, 1.0, shape=(3,), dtype=np.float32),
                                     edge_space=spaces.Discrete(4))
    action_space = spaces.Graph(node_space=spaces.Discrete(5), edge_space=None)

    def _obs(self):
        return self.observation_space.sample()

    def reset(self, *, seed=None, options=None):
        obs, info = super().reset(seed=seed, options=options)
        self.observation_space.seed(int(self.np_random.integers(2**31)))
        return self.observation_space.sample(), info

    def step(self, action):
        assert self.action_space.contains(action), action
        self.t += 1
        return self.observation_space.sample(), float(self.t), self.t >= self.length, False, {}


class SequenceObs(_Counting):
    observation_space = spaces.Sequence(spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float64))
    action_space = spaces.Sequence(spaces.Discrete(3))

    def _obs(self):
        return None

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed, options=options)
        self.observation_space.seed(int(self.np_random.integers(2**31)))
        return self.observation_space.sample(), {}

    def step(self, action):
        assert self.action_space.contains(action), action
        self.t += 1
        return self.observation_space.sample(), float(len(action)), self.t >= self.length, False, {}


class OneOfObs(_Counting):
    observation_space = spaces.OneOf([spaces.Discrete(3), spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)])
    action_space = spaces.OneOf([spaces.Discrete(2), spaces.Box(0.0, 1.0, shape=(1,), dtype=np.float32)])

    def _obs(self):
        return None

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed, options=options)
        self.observation_space.seed(int(self.np_random.integers(2**31)))
        return self.observation_space.sample(), {}

    def step(self, action):
        assert self.action_space.contains(action), action
        self.t += 1
        return self.observation_space.sample(), 1.0, self.t >= self.length, False, {}


for _name, _cls in {"ActionEcho-v0": ActionEcho, "AtariLike-v0": AtariLike, "AtariScreen-v0": AtariScreen,
                    "GraphObs-v0": GraphObs,
                    "SequenceObs-v0": SequenceObs, "OneOfObs-v0": OneOfObs}.items():
    _id = f"gymfarm_test/{_name}"
    if _id not in gym.registry:
        gym.register(id=_id, entry_point=_cls, max_episode_steps=50)


def _slab_mappings():
    """(start, end) of every shared-memory slab mapped in this process (/proc/self/maps)."""
    out = []
    with open("/proc/self/maps") as f:
        for line in f:
            if "gymfarm-slab" in line:
                start, end = (int(x, 16) for x in line.split()[0].split("-"))
                out.append((start, end))
    return out


class SlabVandal(_Counting):
    """Env code that attacks the shared memory its worker serves it through (docs/protocol.md
    "Shared memory"): ``scribble_header()`` rewrites the slab header's area offsets, capacities and
    magic; ``write_past_slab()`` writes the page after the slab (the worker's guard page: a
    SIGSEGV)."""

    observation_space = spaces.Box(0.0, 1000.0, shape=(3,), dtype=np.float32)
    action_space = spaces.Discrete(2)
    length = 1000

    def _obs(self):
        return np.array([self.t, self.t * 2, self.t * 3], dtype=np.float32)

    def scribble_header(self):
        n = 0
        for start, _ in _slab_mappings():
            words = (ctypes.c_uint32 * 8).from_address(start)
            words[0] = 0xDEADBEEF  # magic
            words[4], words[5], words[6], words[7] = 256, 1 << 30, 300, 1 << 30  # areas out of bounds
            n += 1
        return n

    def write_past_slab(self):
        for _, end in _slab_mappings():
            ctypes.memset(end, 0x5A, 4096)
        return False


if "gymfarm_test/SlabVandal-v0" not in gym.registry:
    gym.register(id="gymfarm_test/SlabVandal-v0", entry_point=SlabVandal)


class _ObsArray(np.ndarray):
    """An ndarray subclass (the farm sends its data; the client gets a plain ndarray)."""


class ObsKinds(_Counting):
    """Observations of the forms a slab's raw step reply must take or leave to MessagePack
    (shm/slab.hpp): ``kind`` picks one. Every form gives what the socket path gives, bit for bit."""

    action_space = spaces.Discrete(2)
    length = 6
    KINDS = ("zero_d", "strided", "big_endian", "subclass", "bool", "empty", "int64_3d", "scalar", "fortran",
             "float16")

    def __init__(self, kind="zero_d", render_mode=None):
        super().__init__(render_mode)
        if kind not in self.KINDS:
            raise ValueError(f"unknown kind {kind!r}")
        self.kind = kind
        self.observation_space = spaces.Box(-1e9, 1e9, shape=(3,), dtype=np.float64)

    def _obs(self):
        t, k = float(self.t), self.kind
        base = np.arange(12, dtype=np.float64) + t
        if k == "zero_d":
            return np.array(t)
        if k == "strided":
            return base[::3]
        if k == "big_endian":
            return base[:3].astype(">f8")
        if k == "subclass":
            return base[:3].view(_ObsArray)
        if k == "bool":
            return base[:5] > t + 1.5
        if k == "empty":
            return np.zeros((0, 4), dtype=np.float32)
        if k == "int64_3d":
            return np.arange(24, dtype=np.int64).reshape(2, 3, 4) * self.t
        if k == "scalar":
            return np.float32(t)
        if k == "fortran":
            return np.asfortranarray(base.reshape(3, 4))
        return base[:3].astype(np.float16)


if "gymfarm_test/ObsKinds-v0" not in gym.registry:
    gym.register(id="gymfarm_test/ObsKinds-v0", entry_point=ObsKinds, max_episode_steps=50)


class InfoKinds(_Counting):
    """Rewards and infos of NumPy scalars and plain values whose layout changes between steps
    (python/gymfarm/tails.py reads a raw reply's tail from a learned layout): NaNs with payloads,
    float16, a plain int that changes, keys that come and go, a nested dict."""

    action_space = spaces.Discrete(2)
    observation_space = spaces.Box(-1e9, 1e9, shape=(3,), dtype=np.float64)
    length = 40

    def _obs(self):
        return np.arange(3, dtype=np.float64) + self.t

    def step(self, action):
        self.t += 1
        t = self.t
        nan32 = np.frombuffer(np.array([0x7FC00001 + t], "<u4").tobytes(), "<f4")[0]
        info = {"x": np.float64(t / 3), "f32": nan32 if t % 3 == 0 else np.float32(t / 7),
                "f16": np.float16(np.nan if t % 5 == 0 else t), "i": np.int64(-t), "u": np.uint8(t % 7),
                "b": np.bool_(t % 2), "label": "same", "none": None, "flt": 0.5}
        if t % 4 == 1:
            info["count"] = t  # a plain int that changes: the layout's fixed bytes differ
        if t % 9 == 4:
            info["nested"] = {"deep": np.float64(t)}
        reward = np.float32(t / 2) if t % 8 == 0 else (float(t) if t % 8 == 1 else np.float64(-t))
        info["action"] = action  # as the env got it: a NumPy integer stays one
        return self._obs(), reward, t >= self.length, False, info

    def reset(self, *, seed=None, options=None):
        obs, info = super().reset(seed=seed, options=options)
        info["options"] = options
        return obs, info

    def echo(self, *args, **kwargs):
        """What a call brought: its arguments as the env got them, and their types' names."""
        return [args, kwargs, [type(a).__name__ for a in args], {k: type(v).__name__ for k, v in kwargs.items()}]


if "gymfarm_test/InfoKinds-v0" not in gym.registry:
    gym.register(id="gymfarm_test/InfoKinds-v0", entry_point=InfoKinds)
