"""GET /healthz and GET /readyz (docs/operations.md "Monitoring"): on every HTTP port, without the
token, answering only "ok" or "not ready"; a loopback farm answers them only to loopback Host names."""
import requests

from farm_fixture import wait_until


def base(f):
    return f.rest_url.removesuffix("/v1/")


def get(url, **kw):
    return requests.get(url, timeout=30, **kw)


def test_healthz_answers_ok_on_every_http_port(start_farm):
    farm = start_farm(workers=1)
    for root in (base(farm), farm.gymnasium_url.removesuffix("/v1/")):
        r = get(root + "/healthz")
        assert r.status_code == 200 and r.text == "ok\n", (root, r.status_code, r.text)
        assert r.headers["Content-Type"].startswith("text/plain")
        assert requests.head(root + "/healthz", timeout=30).status_code == 200
        assert requests.post(root + "/healthz", timeout=30).status_code == 405


def test_readyz_follows_the_pool_at_its_bound(start_farm):
    farm = start_farm(workers=1, args=["--max-workers", "1"])
    assert wait_until(lambda: get(base(farm) + "/readyz").status_code == 200, 20)
    assert get(base(farm) + "/readyz").text == "ok\n"
    with farm.connect() as c:
        env = c.make("CartPole-v1")  # the one worker the pool may have now hosts it: no room
        r = get(base(farm) + "/readyz")
        assert r.status_code == 503 and r.text == "not ready\n"
        env.close()
        assert wait_until(lambda: get(base(farm) + "/readyz").status_code == 200, 20)


def test_a_token_farm_answers_health_without_the_token_and_reveals_nothing(start_farm):
    farm = start_farm(workers=1, args=["--require-token"])
    assert farm.token
    assert get(base(farm) + "/v1/envs/").status_code == 401  # the data routes still need it
    r = get(base(farm) + "/healthz")
    assert r.status_code == 200 and r.text == "ok\n"
    assert wait_until(lambda: get(base(farm) + "/readyz").status_code == 200, 20)
    assert get(base(farm) + "/readyz").text == "ok\n"


def test_a_loopback_farm_answers_health_only_to_loopback_hosts(start_farm):
    farm = start_farm(workers=1)
    r = get(base(farm) + "/healthz", headers={"Host": "rebound.example"})
    assert r.status_code == 403 and "ok" not in r.text
    r = get(base(farm) + "/readyz", headers={"Host": "rebound.example:80"})
    assert r.status_code == 403


def test_the_dialects_routes_are_unchanged(start_farm):
    farm = start_farm(workers=1)
    assert get(base(farm) + "/").text == "Gymie is running..."
    assert get(base(farm) + "/v1/envs/").status_code == 200
    assert get(base(farm) + "/healthzz").text == "Gymie is running..."  # only the exact paths
