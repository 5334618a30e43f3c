"""RemoteVectorEnv: a gymnasium.vector.VectorEnv whose sub-envs live in gymfarm workers.

One message per step; autoreset happens inside the workers, so every autoreset mode still costs
one round trip. On a farm whose workers host several envs (``--envs-per-worker``) and for array
spaces (Box, Discrete, MultiBinary, MultiDiscrete) a step is a ``step_vec``: the actions travel as
one ndarray and each worker answers stacked results (each worker's share posted in a slab of its
envs once the first step's reply has said which rows each worker holds; over the socket where
there are no slabs); otherwise each env's step through its slab, or ``step_batch``, one body per env.
Resets, renders and attribute calls are pipelined: N requests, one round trip.
"""
from __future__ import annotations

import os
import time
from collections.abc import Sequence
from copy import deepcopy
from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space, concatenate, create_empty_array, iterate

from . import codec, errors, slab
from .client import Farm
from .env import call_body, copy_back


def make_many(farm: Farm, env_id: str, num_envs: int, kwargs: dict[str, Any], slabs: bool = True
              ) -> tuple[list[dict[str, Any]], list[Any]]:
    """``num_envs`` makes in one round trip, each as RemoteEnv makes one (a legacy id raises
    DeprecatedEnv as gymnasium.make does): their results and their slabs (None where the farm gave
    none or ``slabs`` is false, docs/protocol.md "Shared memory"). If any fails, the ones made are
    closed and the first error is raised."""
    body = {"env_id": env_id, "kwargs": dict(kwargs), "aliases": False}
    if slabs and hasattr(farm, "make_instances"):
        pairs = farm.make_instances(body, num_envs)
    else:  # no slabs wanted, or a sharded farm, which places each make itself
        pairs = [(r, None) for r in farm.call_many([("make", "", body)] * num_envs)]
    made = [r for r, _ in pairs]
    ok = [r for r in made if isinstance(r, dict)]
    if len(ok) != len(made):
        close_slabs([shared for _, shared in pairs])
        farm.close_many([r["instance_id"] for r in ok])
        errors.raise_first(made)
    for r in ok:
        codec.emit_warnings(r)
    return ok, [s for _, s in pairs]


def tune_slabs(slabs: Sequence[Any], num_envs: int) -> None:
    """A vector env's slabs: with more envs than cores, the workers sleep between steps and the
    client spins at most _CROWDED_SPIN on each slab, since a spinning process takes a core a worker
    needs."""
    spin = num_envs < (os.cpu_count() or 1)  # a core for each: the workers may busy-poll
    for shared in slabs:
        if shared is not None:
            shared.worker_spin = spin
            if not spin:
                shared.spin = min(shared.spin, _CROWDED_SPIN)


def close_slabs(slabs: Sequence[Any]) -> None:
    """Unmaps every slab of these (None where an env has none)."""
    for shared in slabs:
        if shared is not None:
            shared.close()


def _unwrap(r: dict[str, Any]) -> None:
    """A sub-env's reply: its warnings raised here, the tuples in its infos rebuilt."""
    if "warnings" in r:
        codec.emit_warnings(r)
    if "tuples" in r:
        codec.apply_tuples(r)


_CROWDED_SPIN = 200e-6  # seconds
_REFUSALS = 3
_ARRAY_SPACES = (spaces.Box, spaces.Discrete, spaces.MultiBinary, spaces.MultiDiscrete)
_AUTORESET_WIRE = {AutoresetMode.NEXT_STEP: "next_step", AutoresetMode.SAME_STEP: "same_step",
                   AutoresetMode.DISABLED: None}


def reset_plan(num_envs: int, seed: int | Sequence[int | None] | None, options: dict[str, Any] | None
               ) -> tuple[list[int | None], dict[str, Any] | None, np.ndarray]:
    """A vector reset's seed per env, its options without ``reset_mask``, and the mask, checked as
    SyncVectorEnv checks them."""
    if seed is None:
        seeds: list[int | None] = [None] * num_envs
    elif isinstance(seed, (int, np.integer)):
        seeds = [int(seed) + i for i in range(num_envs)]
    else:
        seeds = list(seed)
    if len(seeds) != num_envs:
        raise ValueError(f"If seeds are passed as a list the length must match num_envs={num_envs} "
                         f"but got length={len(seeds)}.")
    options = dict(options) if options is not None else None
    mask = np.ones((num_envs,), dtype=np.bool_)
    if options is not None and "reset_mask" in options:
        mask = options.pop("reset_mask")
        if not (isinstance(mask, np.ndarray) and mask.shape == (num_envs,) and mask.dtype == np.bool_):
            raise ValueError(f"options['reset_mask'] must be a numpy bool array of shape ({num_envs},)")
        if not mask.any():
            raise ValueError("options['reset_mask'] must select at least one env")
    return seeds, options, mask


class RemoteVectorEnv(VectorEnv):
    """``num_envs`` copies of one env, each in its own worker process.

    Behaves as :class:`gymnasium.vector.SyncVectorEnv` does, step for step, for every autoreset
    mode; a batch that does not hold ``num_envs`` actions raises ``ValueError`` before any sub-env
    steps. ``on_crash="reset"`` replaces a sub-env whose worker died during a step with a new one,
    reset, and reports it in that step's infos (``crashed``, ``crash``; the row holds the reset obs,
    reward 0, ``truncated=True``); the default ``"raise"`` raises ``WorkerCrashed``. Beyond the
    VectorEnv API it offers ``step_async``/``step_wait`` and an EnvPool-style
    ``send(actions, env_ids)``/``recv()`` that returns whichever envs finished first.
    """

    def __init__(self, endpoint: str, env_id: str, num_envs: int = 1,
                 autoreset_mode: str | AutoresetMode = AutoresetMode.NEXT_STEP,
                 timeout: float = 60.0, copy: bool = True, token: str | None = None, on_crash: str = "raise",
                 farm_options: dict[str, Any] | None = None, **make_kwargs: Any):
        if num_envs < 1:
            raise ValueError("num_envs must be at least 1")
        if on_crash not in ("raise", "reset"):
            raise ValueError("on_crash must be 'raise' or 'reset'")
        self.on_crash = on_crash
        self._make_kwargs = dict(make_kwargs)
        self.autoreset_mode = AutoresetMode(autoreset_mode)
        self.farm = Farm(endpoint, timeout=timeout, token=token, **(farm_options or {}))  # heartbeat, local
        self.env_id = env_id
        self.num_envs = num_envs
        self.copy = copy
        self._closed_remote = True  # until the envs exist: a failed make has nothing to close
        try:
            made, self._slabs = make_many(self.farm, env_id, num_envs, make_kwargs)
        except BaseException:
            self.farm.close()
            raise
        self.instance_ids: list[str] = [r["instance_id"] for r in made]
        self._closed_remote = False
        tune_slabs(self._slabs, num_envs)
        first = made[0]
        self.single_observation_space = codec.space_from_wire(first["observation_space"])
        self.single_action_space = codec.space_from_wire(first["action_space"])
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.render_mode = first.get("render_mode")
        self.metadata = dict(first.get("metadata") or {})
        self.metadata["autoreset_mode"] = self.autoreset_mode
        # step_vec pays where workers host several envs (--envs-per-worker); with one env per
        # worker, step_batch's per-env bodies are cheaper to gather
        self._vec = (int(self.farm.server.get("envs_per_worker", 1)) > 1
                     and isinstance(self.single_observation_space, _ARRAY_SPACES)
                     and isinstance(self.single_action_space, _ARRAY_SPACES))
        self._instance_frames = [iid.encode() for iid in self.instance_ids]
        self._step_vec = False
        # step_vec through the slabs: (rows, the slab it is posted in) per worker, learned from the
        # socket's reply (which says which rows each worker holds); None until then
        self._groups: list[tuple[list[int], Any]] | None = None
        self._refusals = 0  # shares a worker refused: after _REFUSALS, vector steps stay on the socket
        self._observations = create_empty_array(self.single_observation_space, n=num_envs, fn=np.zeros)
        self._env_obs: list[Any] = [None] * num_envs
        self._rewards = np.zeros((num_envs,), dtype=np.float64)
        self._terminations = np.zeros((num_envs,), dtype=np.bool_)
        self._truncations = np.zeros((num_envs,), dtype=np.bool_)
        self._autoreset_envs = np.zeros((num_envs,), dtype=np.bool_)
        self._step_ticket: Any = None  # step_async's requests, for step_wait
        self._sent: dict[int, int] = {}  # rid -> env index, for send/recv

    # -- the VectorEnv API ----------------------------------------------------------------------

    def reset(self, *, seed: int | Sequence[int | None] | None = None,
              options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        seeds, options, mask = reset_plan(self.num_envs, seed, options)
        indices = [i for i in range(self.num_envs) if mask[i]]
        requests = []
        for i in indices:
            body: dict[str, Any] = {}
            if seeds[i] is not None:
                body["seed"] = int(seeds[i])
            if options is not None:
                body["options"] = options
            requests.append(("reset", self.instance_ids[i], body))
        self._terminations[mask] = False
        self._truncations[mask] = False
        self._autoreset_envs[mask] = False
        infos: dict[str, Any] = {}
        results = self.farm.call_many(requests)
        self._raise_first(results, indices)
        for i, r in zip(indices, results):
            _unwrap(r)
            self._env_obs[i] = codec.value_to_space(self.single_observation_space, r["obs"])
            infos = self._add_info(infos, r["info"], i)
        return self._batched_obs(), infos

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        self.step_async(actions)
        return self.step_wait()

    def step_async(self, actions: Any) -> None:
        """Sends the batched step and returns at once; :meth:`step_wait` collects it."""
        if self._step_ticket is not None:
            raise RuntimeError("step_async called twice without step_wait")
        acts = np.asarray(actions) if self._vec else None
        step_vec = acts is not None and acts.shape[:1] == (self.num_envs,) and acts.dtype.kind in "biuf"
        # one action per env only for step_batch: step_vec sends the array as it is
        per_env = None if step_vec else list(iterate(self.action_space, actions))
        if per_env is not None and len(per_env) != self.num_envs:  # SyncVectorEnv's zip(strict=True) refuses it too
            raise ValueError(f"got a batch of {len(per_env)} actions for num_envs={self.num_envs}")
        if self.autoreset_mode == AutoresetMode.DISABLED and self._autoreset_envs.any():
            done = np.flatnonzero(self._autoreset_envs).tolist()
            raise AssertionError(f"autoreset is disabled and sub-envs {done} ended an episode: reset them "
                                 "with reset(options={'reset_mask': ...}) before stepping")
        self._step_vec = step_vec
        if step_vec:
            self._step_ticket = self._post_vec(np.ascontiguousarray(acts))
            return
        steps = list(zip(self.instance_ids, per_env))
        if any(s is not None for s in self._slabs):  # each env's step through its slab, all sent first
            self._step_ticket = self.farm.send_slab_steps(self._slabs, steps, **self._autoreset_field())
            return
        self._step_ticket = self.farm.send_step_batch(steps, **self._autoreset_field())

    def step_wait(self, timeout: float | None = None
                  ) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if self._step_ticket is None:
            raise RuntimeError("step_wait called without step_async")
        ticket, self._step_ticket = self._step_ticket, None
        if self._step_vec:
            return self._step_wait_vec(ticket, timeout)
        results = (self.farm.wait_slab_steps(ticket, timeout) if isinstance(ticket, list)
                   else self.farm.wait_step_batch(ticket, timeout))
        infos: dict[str, Any] = {}
        for i, r in enumerate(results):
            if isinstance(r, errors.GymfarmError):
                continue
            infos = self._absorb(i, r, infos)
        self._autoreset_envs = np.logical_or(self._terminations, self._truncations)
        crashed = self._crashed(dict(enumerate(results)))
        if crashed:
            infos = self._replace_crashed(crashed, infos)
            results = [crashed.get(i, r) for i, r in enumerate(results)]
        self._raise_first(results, range(self.num_envs))
        return (self._batched_obs(), np.copy(self._rewards), np.copy(self._terminations),
                np.copy(self._truncations), infos)

    def _post_vec(self, acts: np.ndarray) -> tuple[list[tuple[list[int], Any, bytes]], Any]:
        """A step_vec's requests: each worker's share posted in a slab of its envs (STEP_VEC, the
        body the broker would send it) where the groups are known, and the rows left over sent as
        one step_vec over the socket: (posted, (socket ticket, its rows) or None)."""
        field = self._autoreset_field()
        posted: list[tuple[list[int], Any, bytes]] = []
        for rows, lead in self._groups or ():
            if not lead.usable or self.farm._closed:  # its env is gone: learned again from the socket's reply
                self._groups = None
                continue
            body = codec.pack(dict(field, instances=[self.instance_ids[j] for j in rows], actions=acts[rows]))
            if lead.post(slab.STEP_VEC, body):
                posted.append((rows, lead, body))
        taken = {j for rows, _, _ in posted for j in rows}
        rest = [j for j in range(self.num_envs) if j not in taken]
        if not rest:
            return posted, None
        body = codec.pack(dict(field, actions=acts if len(rest) == self.num_envs else acts[rest]))
        return posted, (self._send_vec(body, rest), rest)

    def _slabs_of(self, rows: list[int]) -> list[Any]:
        return [self._slabs[j] for j in rows]

    def _lead_of(self, rows: list[int]) -> Any:
        """The slab a share of these envs is posted in: the first this client still uses, when every
        one of them has a slab (the worker checks each env's); None otherwise."""
        slabs = self._slabs_of(rows)
        if any(sh is None for sh in slabs):
            return None
        return next((sh for sh in slabs if sh.usable), None)

    def _send_vec(self, body: bytes, rows: list[int]) -> int:
        """A step_vec of these rows over the socket (the broker reads only the body's actions and
        autoreset)."""
        return self.farm._send([b"step_vec", b"", b"", body] + [self._instance_frames[j] for j in rows])

    def _socket_parts(self, ticket: int, rows: list[int], timeout: float | None
                      ) -> list[tuple[list[int], bool, Any]]:
        """The socket's reply to step_vec, [rid, ok, (rows, status, body)*], as (env indices, ok,
        body) per worker."""
        reply = self.farm._wait([ticket], timeout)[ticket]
        if reply[1] != b"ok":
            raise errors.from_wire(codec.unpack(reply[2]))
        return [([rows[i] for i in codec.unpack(reply[k])], reply[k + 1] == b"ok", codec.unpack(reply[k + 2]))
                for k in range(2, len(reply) - 2, 3)]

    def _slab_part(self, rows: list[int], lead: Any, body: bytes, timeout: float
                   ) -> list[tuple[list[int], bool, Any]]:
        """A worker's share answered in its slab, as _socket_parts gives it. A share the worker
        refused (nothing ran) goes over the socket. A share whose slab closed unanswered fails as a
        whole: its other envs may have stepped, so it is not sent again."""
        lead_id = self.instance_ids[rows[self._slabs_of(rows).index(lead)]]
        try:
            status, data = self.farm.slab_answer(lead, lead_id, timeout)
        except errors.GymfarmError:
            self._groups = None
            raise
        if status in (slab.OK, slab.ERR):
            return [(rows, status == slab.OK, data)]
        self._groups = None  # learned again from the socket's reply
        if status == slab.REFUSED:
            self._refusals += 1
            return self._socket_parts(self._send_vec(body, rows), rows, timeout)
        if status == slab.UNANSWERED:
            return [(rows, False, errors.GymfarmError(
                f"the slab of instance {lead_id} closed before its worker answered this step; the envs of "
                "that worker may have stepped", {"instance_id": lead_id}))]
        raise self.farm._corrupt(lead, lead_id, slab.SlabError(f"a vector step answered with status {status}"))

    def _step_wait_vec(self, ticket: tuple[list[tuple[list[int], Any, bytes]], Any], timeout: float | None
                       ) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """The shares of a step_vec, from the slabs and the socket, in one batch, within one
        deadline; a share that failed fails its envs, and the others' rows still count."""
        posted, sock = ticket
        deadline = time.monotonic() + (self.farm.timeout if timeout is None else timeout)
        parts: list[tuple[list[int], bool, Any]] = []
        for rows, lead, body in posted:
            try:
                parts += self._slab_part(rows, lead, body, max(0.0, deadline - time.monotonic()))
            except errors.FarmUnavailable:
                raise
            except errors.GymfarmError as e:
                parts.append((rows, False, e))
        if sock is not None:
            got = self._socket_parts(sock[0], sock[1], max(0.0, deadline - time.monotonic()))
            if (self._groups is None and self._refusals < _REFUSALS and len(sock[1]) == self.num_envs
                    and all(ok for _, ok, _ in got)):
                # each worker's rows, where the next steps can post them in a slab
                self._groups = [(rows, lead) for rows, _, _ in got if (lead := self._lead_of(rows)) is not None]
                # one process per worker: they may busy-poll for the next step while there is a
                # core for each (a 16-env batch over 2 workers on 2 cores ran 15-30% quicker so)
                for _, lead in self._groups:
                    lead.worker_spin = len(got) <= (os.cpu_count() or 1)
            parts += got
        return self._finish_vec(parts)

    def _finish_vec(self, parts: list[tuple[list[int], bool, Any]]
                    ) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """The batch from each worker's share: (env indices, whether the worker answered, its
        stacked body or its error)."""
        failed: dict[int, errors.GymfarmError] = {}
        stepped: list[int] = []  # the envs whose rows came
        noted: list[tuple[int, Any, int]] = []  # (env, worker body, its row there): a final or an info to add
        for rows, whole, body in parts:
            if not whole:  # the worker failed as a whole (crash, timeout): each of its envs
                err = body if isinstance(body, errors.GymfarmError) else None
                failed.update((j, err or errors.from_wire(body)) for j in rows)
                continue
            if "warnings" in body:
                codec.emit_warnings(body)
            for i, marks in body.pop("tuples", None) or []:  # [row, {info|final_info: paths}]
                for key, paths in marks.items():
                    if key == "info":
                        body["infos"][i] = codec.restore_tuples(body["infos"][i], paths)
                    elif key == "final_info":
                        body.setdefault("final_marks", {})[i] = paths
            if body["errors"]:
                errs = {i: e for i, e in body["errors"]}
                failed.update((rows[i], errors.from_wire(e)) for i, e in errs.items())
                ok = [i for i in range(len(rows)) if i not in errs]
                at = [rows[i] for i in ok]
                if ok:
                    self._observations[at] = body["obs"][ok]
                    self._rewards[at] = [body["rewards"][i] for i in ok]
                    self._terminations[at] = [body["terminated"][i] for i in ok]
                    self._truncations[at] = [body["truncated"][i] for i in ok]
            else:  # (the common case: every row, as it came)
                ok, at = range(len(rows)), rows
                self._observations[at] = body["obs"]
                self._rewards[at] = body["rewards"]
                self._terminations[at] = body["terminated"]
                self._truncations[at] = body["truncated"]
            if body["finals"]:
                fm = body.get("final_marks", {})
                body["finals"] = {i: (fo, codec.restore_tuples(fi, fm[i]) if i in fm else fi)
                                  for i, fo, fi in body["finals"]}
            else:
                body["finals"] = {}
            stepped += at
            infos_of, finals = body["infos"], body["finals"]
            noted += [(rows[i], body, i) for i in ok if infos_of[i] or i in finals]
        infos: dict[str, Any] = {}
        if stepped:
            rows_now = self._observations.copy()  # each env's row, apart from the batch
            for j in stepped:
                self._env_obs[j] = rows_now[j]
        for j, body, i in sorted(noted, key=lambda n: n[0]):  # in env order, as SyncVectorEnv builds its infos
            if i in body["finals"]:
                infos = self._add_final(infos, *body["finals"][i], j)
            if info := body["infos"][i]:  # (an empty info adds nothing)
                infos = self._add_info(infos, info, j)
        self._autoreset_envs = np.logical_or(self._terminations, self._truncations)
        crashed = self._crashed(failed)
        if crashed:
            infos = self._replace_crashed(crashed, infos)
            for j, r in crashed.items():
                if isinstance(r, dict):
                    self._observations[j] = r["obs"]
                    failed.pop(j, None)
        if failed:
            results = [failed.get(j) or {"obs": self._observations[j], "reward": self._rewards[j],
                                         "terminated": self._terminations[j], "truncated": self._truncations[j],
                                         "info": {}} for j in range(self.num_envs)]
            self._raise_first(results, range(self.num_envs))
        obs = deepcopy(self._observations) if self.copy else self._observations
        return obs, np.copy(self._rewards), np.copy(self._terminations), np.copy(self._truncations), infos

    def render(self) -> tuple[Any, ...] | None:
        results = self.farm.call_many([("render", iid, None) for iid in self.instance_ids])
        self._raise_first(results, range(self.num_envs))
        return tuple(r["frame"] for r in results)

    def call(self, name: str, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        """Calls ``name`` on every sub-env (or reads it, when it is not callable). A writable ndarray
        argument filled in place ends as the last sub-env left it, as SyncVectorEnv's loop leaves it."""
        body, arrays = call_body(name, args, kwargs)
        results = self.farm.call_many([("call", iid, body) for iid in self.instance_ids])
        self._raise_first(results, range(self.num_envs))
        for r in results:
            _unwrap(r)
            copy_back(arrays, r)
        return tuple(r["value"] for r in results)

    def get_attr(self, name: str) -> tuple[Any, ...]:
        results = self.farm.call_many([("get_attr", iid, {"name": name}) for iid in self.instance_ids])
        self._raise_first(results, range(self.num_envs))
        return tuple(self._remote_method(iid, name) if r.get("callable") else r["value"]
                     for iid, r in zip(self.instance_ids, results))

    def _remote_method(self, instance_id: str, name: str) -> Any:
        """A sub-env's method (what SyncVectorEnv.get_attr returns for one): calling it is a call."""
        def method(*args: Any, **kwargs: Any) -> Any:
            body, arrays = call_body(name, args, kwargs)
            r = self.farm.call("call", instance_id, body)
            _unwrap(r)
            copy_back(arrays, r)
            return r["value"]

        method.__name__ = name
        return method

    def set_attr(self, name: str, values: list[Any] | tuple[Any, ...] | Any) -> None:
        if not isinstance(values, (list, tuple)):
            values = [values] * self.num_envs
        if len(values) != self.num_envs:
            raise ValueError(f"values must have length num_envs={self.num_envs}, got {len(values)}")
        results = self.farm.call_many([("set_attr", iid, {"name": name, "value": v})
                                       for iid, v in zip(self.instance_ids, values)])
        self._raise_first(results, range(self.num_envs))

    def close_extras(self, **kwargs: Any) -> None:
        if not getattr(self, "_closed_remote", True):
            self._closed_remote = True
            self.farm.close_many(self.instance_ids)
            close_slabs(self._slabs)
            self.farm.close()

    # -- EnvPool-style asynchronous stepping ---------------------------------------------------

    def send(self, actions: Any, env_ids: Sequence[int] | None = None) -> None:
        """Sends one step per env in ``env_ids`` (default all) without waiting."""
        ids = list(range(self.num_envs)) if env_ids is None else [int(i) for i in env_ids]
        acts = list(actions)
        if len(acts) != len(ids):
            raise ValueError(f"got {len(acts)} actions for {len(ids)} envs")
        field = self._autoreset_field()
        for i, a in zip(ids, acts):
            if i in self._sent.values():
                raise RuntimeError(f"env {i} already has a step in flight")
            rid = self.farm._send(self.farm._frames("step", self.instance_ids[i], dict(field, action=a)))
            self._sent[rid] = i

    def recv(self, min_envs: int = 1, timeout: float | None = None
             ) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any], np.ndarray]:
        """Waits for at least ``min_envs`` in-flight steps and returns every one finished so far:
        ``(obs, rewards, terminations, truncations, infos, env_ids)``, batched over those envs.

        With ``on_crash="reset"`` an env whose worker died (before or while this step ran) is
        replaced, reset, and returned as ``step`` returns it: the reset obs, reward 0,
        ``truncated=True`` and ``crashed``/``crash`` in its infos. Otherwise the first error is
        raised, and the exception's ``results`` keeps every env's outcome of this recv."""
        if not self._sent:
            raise RuntimeError("recv called with no step in flight")
        replies = self.farm._wait(list(self._sent), timeout, at_least=min(min_envs, len(self._sent)))
        ids = [self._sent.pop(rid) for rid in replies]
        outcomes: dict[int, Any] = {}
        for rid, i in zip(replies, ids):
            try:
                outcomes[i] = Farm._result(replies[rid])
            except errors.GymfarmError as e:
                outcomes[i] = e
        crashed = self._crashed(outcomes)
        results = [crashed.get(i, outcomes[i]) for i in ids]
        if any(isinstance(r, errors.GymfarmError) for r in results):
            errors.raise_first(results, ids, self.instance_ids)
        obs, rew, term, trunc, infos = [], [], [], [], {}
        for k, i in enumerate(ids):
            r = outcomes[i]
            if i in crashed:
                infos = self._replace_crashed({i: crashed[i]}, infos, at=k)
            else:
                self._absorb(i, r, {})
                if "final_obs" in r:
                    infos = self._add_final(infos, r["final_obs"], r["final_info"], k)
                infos = self._add_info(infos, r["info"], k)
                self._autoreset_envs[i] = self._terminations[i] or self._truncations[i]
            obs.append(self._env_obs[i])
            rew.append(self._rewards[i])
            term.append(self._terminations[i])
            trunc.append(self._truncations[i])
        batch = create_empty_array(self.single_observation_space, n=len(ids), fn=np.zeros)
        return (concatenate(self.single_observation_space, obs, batch), np.array(rew), np.array(term),
                np.array(trunc), infos, np.array(ids, dtype=np.int64))

    # -- on_crash="reset" -------------------------------------------------------------------------

    def _crashed(self, outcomes: dict[int, Any]) -> dict[int, Any]:
        """With ``on_crash="reset"``: the sub-envs whose worker died in this step, each replaced by
        a new instance (made and reset), mapped to that reset's result; {} otherwise. A sub-env
        whose replacement cannot be made keeps its WorkerCrashed error (raised as before)."""
        if self.on_crash != "reset":
            return {}
        out: dict[int, Any] = {}
        for i, r in outcomes.items():
            if not isinstance(r, errors.WorkerCrashed):
                continue
            try:
                made, shared = self.farm.make_instance({"env_id": self.env_id, "kwargs": self._make_kwargs,
                                                        "aliases": False})
                reset = self.farm.slab_call(shared, "reset", made["instance_id"], {})
            except errors.GymfarmError:
                out[i] = r
                continue
            _unwrap(reset)
            if self._slabs[i] is not None:
                self._slabs[i].close()
            tune_slabs([shared], self.num_envs)
            self._slabs[i] = shared
            self._groups = None  # the new env may be on another worker: learned again
            old = self.instance_ids[i]
            self.instance_ids[i] = made["instance_id"]
            self._instance_frames[i] = made["instance_id"].encode()
            self.farm.close_many([old])
            out[i] = {"obs": codec.value_to_space(self.single_observation_space, reset["obs"]),
                      "info": reset["info"], "crash": r}
        return out

    def _replace_crashed(self, crashed: dict[int, Any], infos: dict[str, Any], at: int | None = None
                         ) -> dict[str, Any]:
        """Sub-env i's row after its replacement: the new env's reset obs and info, reward 0,
        truncated (its episode was cut short), and ``crashed``/``crash`` in the infos (at row i, or
        at row ``at`` of a recv's batch)."""
        for i in sorted(crashed):
            r = crashed[i]
            if not isinstance(r, dict):
                continue
            err = r["crash"]
            self._env_obs[i] = r["obs"]
            self._rewards[i] = 0.0
            self._terminations[i] = False
            self._truncations[i] = True
            self._autoreset_envs[i] = False  # already reset: the next step steps the new env
            info = dict(r["info"]) if isinstance(r["info"], dict) else {}
            info["crashed"] = True
            info["crash"] = {"code": err.code, "message": err.message, "details": dict(err.details)}
            infos = self._add_info(infos, info, i if at is None else at)
        return infos

    # -- helpers -------------------------------------------------------------------------------

    def _autoreset_field(self) -> dict[str, Any]:
        wire = _AUTORESET_WIRE[self.autoreset_mode]
        return {"autoreset": wire} if wire else {}

    def _absorb(self, i: int, r: dict[str, Any], infos: dict[str, Any]) -> dict[str, Any]:
        _unwrap(r)
        space = self.single_observation_space
        self._env_obs[i] = codec.value_to_space(space, r["obs"])
        self._rewards[i] = r["reward"]
        self._terminations[i] = r["terminated"]
        self._truncations[i] = r["truncated"]
        if "final_obs" in r:
            infos = self._add_final(infos, r["final_obs"], r["final_info"], i)
        return self._add_info(infos, r["info"], i)

    def _add_final(self, infos: dict[str, Any], final_obs: Any, final_info: Any, i: int) -> dict[str, Any]:
        """Sub-env i ended an episode and was reset in the same step ("same_step" autoreset)."""
        return self._add_info(infos, {"final_obs": codec.value_to_space(self.single_observation_space, final_obs),
                                      "final_info": final_info}, i)

    def _batched_obs(self) -> Any:
        self._observations = concatenate(self.single_observation_space, self._env_obs, self._observations)
        return deepcopy(self._observations) if self.copy else self._observations

    def _raise_first(self, results: Sequence[Any], indices: Sequence[int]) -> None:
        errors.raise_first(results, list(indices), self.instance_ids)

    def __repr__(self) -> str:
        return f"<RemoteVectorEnv {self.env_id} x{self.num_envs} at {self.farm.endpoint}>"
