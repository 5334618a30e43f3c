import pytest


@pytest.fixture
def one_env(start_farm):
    """Factory: one_env(env_id) -> a reset RemoteEnv on a farm of one worker, closed at teardown."""
    made = []

    def make(env_id: str):
        farm = start_farm(workers=1).connect()
        env = farm.make(env_id)
        env.reset(seed=0)
        made.append((farm, env))
        return env

    yield make
    for farm, env in made:
        env.close()
        farm.close()

