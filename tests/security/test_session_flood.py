"""Finding 10: 100,001 hellos cleared the set of authorized clients, so a token holder could log
everyone out: another client's next step got `unauthorized`. Sessions are now per connection; when
the table is full (--max-sessions) only an idle session that holds nothing makes room."""
from native_raw import RawZmq, error_of

import gymfarm


def test_hellos_from_many_connections_do_not_log_a_working_client_out(start_farm):
    farm = start_farm(workers=2, args=["--require-token", "--max-sessions", "8"])
    with gymfarm.connect(farm.endpoint, token=farm.token, local=False) as victim:
        env = victim.make("CartPole-v1")
        env.reset(seed=0)
        for _ in range(60):
            a = RawZmq(farm.endpoint)
            assert a.request(b"hello", body={"version": 1, "token": farm.token})[1] == b"ok"
            a.close()
        for _ in range(5):
            env.step(0)  # still authorized: its session holds an instance
        env.close()
        # an idle client whose session made room says hello again by itself and goes on
        assert victim.ping()


def test_a_table_of_busy_sessions_refuses_new_hellos_clearly(start_farm):
    farm = start_farm(workers=3, args=["--require-token", "--max-sessions", "2"])
    with gymfarm.connect(farm.endpoint, token=farm.token, local=False) as a, \
            gymfarm.connect(farm.endpoint, token=farm.token, local=False) as b:
        ea, eb = a.make("CartPole-v1"), b.make("CartPole-v1")
        c = RawZmq(farm.endpoint)
        err = error_of(c.request(b"hello", body={"version": 1, "token": farm.token}))
        assert err["code"] == "overloaded" and "--max-sessions" in err["message"]
        c.close()
        ea.reset(seed=0)
        eb.reset(seed=0)
        ea.close()
        eb.close()
