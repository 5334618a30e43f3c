"""Typed exceptions for every error code of the gymfarm protocol (docs/protocol.md "Errors")."""
from __future__ import annotations

from typing import Any


class GymfarmError(Exception):
    """Base class of every error the farm reports. ``code`` is the protocol's stable code."""

    code = "internal"

    def __init__(self, message: str, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = dict(details or {})


class BadRequest(GymfarmError, ValueError):
    """The request was malformed: bad env id, missing field, unsupported protocol version."""

    code = "bad_request"


class UnknownInstance(GymfarmError, KeyError):
    """No such env instance: never made, or already closed."""

    code = "unknown_instance"

    def __str__(self) -> str:  # KeyError would quote the message
        return self.message


class BadAction(GymfarmError, ValueError):
    """The action could not be decoded at all. An action outside the space goes to the env, as
    in-process; what the env raises for it arrives as :class:`EnvError`."""

    code = "bad_action"


class EnvError(GymfarmError):
    """The env raised. ``remote_type``, ``remote_message`` and ``remote_traceback`` describe it."""

    code = "env_error"

    @property
    def remote_type(self) -> str:
        return str(self.details.get("type", ""))

    @property
    def remote_message(self) -> str:
        return str(self.details.get("message", ""))

    @property
    def remote_traceback(self) -> str:
        return str(self.details.get("traceback", ""))

    def __str__(self) -> str:
        tb = self.remote_traceback
        return f"{self.message}\n\nRemote traceback:\n{tb}" if tb else self.message


class WorkerCrashed(GymfarmError):
    """The worker process holding the instance died (signal or exit code in ``details``)."""

    code = "worker_crashed"


class Timeout(GymfarmError, TimeoutError):
    """A request passed its deadline on the farm, or the farm did not answer in time."""

    code = "timeout"


class CapacityExhausted(GymfarmError):
    """Every worker holds an instance; close one or start the farm with more workers."""

    code = "capacity_exhausted"


class Overloaded(GymfarmError):
    """Too much at once: requests queued for one instance, or a client's instance or in-flight limit."""

    code = "overloaded"


class ShuttingDown(GymfarmError):
    """The farm is stopping."""

    code = "shutting_down"


class Unauthorized(GymfarmError, PermissionError):
    """The token is missing or wrong."""

    code = "unauthorized"


class ResourceLimit(GymfarmError):
    """The env went past a limit the operator set (``details["limit"]`` names it)."""

    code = "resource_limit"


class FarmUnavailable(GymfarmError, ConnectionError):
    """No farm answered at the endpoint."""

    code = "unavailable"


class FarmLost(FarmUnavailable):
    """The farm holding the instance went away (its process, node or connection died) while the
    client used it: raised for every request in flight then, and on a sharded client for every
    later request to that farm's instances. ``details["endpoint"]`` names the farm."""

    code = "farm_lost"


_BY_CODE = {cls.code: cls for cls in (BadRequest, UnknownInstance, BadAction, EnvError, WorkerCrashed, Timeout,
                                      CapacityExhausted, Overloaded, ShuttingDown, Unauthorized, ResourceLimit,
                                      FarmLost)}


def raise_first(results: Any, indices: Any = None, instance_ids: Any = None) -> None:
    """Raises the first error among per-env ``results``, naming the sub-env. The exception keeps
    ``env_index`` and every env's outcome in ``results``, so the others' results are not lost."""
    for k, r in enumerate(results):
        if isinstance(r, GymfarmError):
            i = indices[k] if indices is not None else k
            r.details.setdefault("env_index", i)
            r.env_index = i  # type: ignore[attr-defined]
            r.results = list(results)  # type: ignore[attr-defined]
            label = f"sub-env {i}" + (f" ({instance_ids[i]})" if instance_ids else "")
            r.message = f"{label}: {r.message}"
            r.args = (r.message,)
            raise r


def from_wire(body: Any) -> GymfarmError:
    """Maps an error body ``{code, message, details}`` to its exception (the one place that does)."""
    if not isinstance(body, dict):
        return GymfarmError(f"malformed error from the farm: {body!r}")
    cls = _BY_CODE.get(str(body.get("code")), GymfarmError)
    err = cls(str(body.get("message", "")), body.get("details") if isinstance(body.get("details"), dict) else None)
    if cls is GymfarmError:
        err.details.setdefault("code", body.get("code"))
    if "gymnasium_error" in err.details:
        err = _with_gymnasium_error(err, err.details["gymnasium_error"])
    return err


class RemoteWarning(UserWarning):
    """A warning raised in the worker whose category is not a built-in warning class."""


_GYMNASIUM_ERRORS: dict[str, type] = {}


def _with_gymnasium_error(err: GymfarmError, name: Any) -> GymfarmError:
    """The same error, also an instance of the gymnasium.error class an in-process gym.make would
    raise (``DeprecatedEnv``, ``NameNotFound``, ...), so ``except gym.error.DeprecatedEnv`` works."""
    import gymnasium.error as gym_error

    base = getattr(gym_error, str(name), None) if isinstance(name, str) and name else None
    if not (isinstance(base, type) and issubclass(base, Exception)):
        return err
    key = f"{type(err).__name__}:{name}"
    cls = _GYMNASIUM_ERRORS.get(key)
    if cls is None:
        cls = _GYMNASIUM_ERRORS[key] = type(str(name), (type(err), base), {"__module__": __name__})
    out = cls(err.message, err.details)
    return out
