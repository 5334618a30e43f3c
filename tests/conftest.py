import pytest

from farm_fixture import FarmProcess, pid_alive, wait_until


def workers_gone(pids, timeout=10.0):
    """Whether every one of these worker processes has exited within the timeout."""
    return wait_until(lambda: not any(pid_alive(p) for p in pids), timeout)


@pytest.fixture
def start_farm(tmp_path):
    """Factory: start_farm(workers=2, args=[...]) -> FarmProcess; every farm is stopped and checked
    for leftover worker processes at teardown."""
    farms = []

    def start(workers=2, args=None, env_vars=None):
        f = FarmProcess(tmp_path / f"farm{len(farms)}", workers=workers, args=args, env_vars=env_vars)
        farms.append(f)
        return f

    yield start
    for f in farms:
        workers = f.worker_pids()
        f.stop()
        assert workers_gone(workers), "worker processes left behind"


@pytest.fixture(scope="module")
def shared_farm(tmp_path_factory):
    """One farm of 20 workers shared by the read-mostly tests of a module."""
    f = FarmProcess(tmp_path_factory.mktemp("shared"), workers=20)
    yield f
    workers = f.worker_pids()
    assert f.stop() == 0, f.log()
    assert workers_gone(workers), "worker processes left behind"


@pytest.fixture(params=["compiled", "python"])
def slab_step(request, monkeypatch):
    """Which client-side slab step the test's clients use: the compiled one (gymfarm._slab_port,
    python/ext; what scripts/build gives) or slab.py's own Python (a package without the module)."""
    from gymfarm import slab

    if request.param == "python":
        monkeypatch.setattr(slab, "_slab_port", None)
    else:
        assert slab._slab_port is not None, "scripts/build puts gymfarm._slab_port beside the package's modules"
    return request.param
