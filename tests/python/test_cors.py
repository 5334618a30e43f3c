"""--allow-origin lets a browser page from that origin use the gateway: CORS preflights are
answered (without the token, which browsers never send with one) and replies carry
Access-Control-Allow-Origin for that origin only."""
import requests

APP = "http://app.example:8080"


def base(f):
    return f.rest_url.removesuffix("/v1/")


def preflight(url, origin, method="POST"):
    return requests.options(url, headers={"Origin": origin, "Access-Control-Request-Method": method,
                                          "Access-Control-Request-Headers": "content-type"}, timeout=30)


def test_a_listed_origin_gets_preflights_and_cors_headers(start_farm):
    farm = start_farm(workers=1, args=["--allow-origin", APP])
    for url in (base(farm) + "/v1/envs/", farm.gymnasium_url.rstrip("/") + "/envs/"):
        r = preflight(url, APP)
        assert r.status_code == 204, (url, r.status_code, r.text)
        assert r.headers["Access-Control-Allow-Origin"] == APP
        assert "POST" in r.headers["Access-Control-Allow-Methods"]
        assert "Content-Type" in r.headers["Access-Control-Allow-Headers"]
    r = requests.post(base(farm) + "/v1/envs/", json={"env_id": "CartPole-v1"}, headers={"Origin": APP}, timeout=30)
    assert r.status_code == 200 and r.headers["Access-Control-Allow-Origin"] == APP
    assert r.headers["Vary"] == "Origin"
    iid = r.json()["instance_id"]
    r = requests.delete(base(farm) + f"/v1/envs/{iid}/", headers={"Origin": APP}, timeout=30)
    assert r.headers.get("Access-Control-Allow-Origin") == APP


def test_other_origins_get_no_cors(start_farm):
    farm = start_farm(workers=1, args=["--allow-origin", APP])
    r = preflight(base(farm) + "/v1/envs/", "http://evil.example")
    assert r.status_code == 403 and "Access-Control-Allow-Origin" not in r.headers
    r = requests.get(base(farm) + "/v1/envs/", headers={"Origin": "http://localhost:3000"}, timeout=30)
    assert r.status_code == 200 and "Access-Control-Allow-Origin" not in r.headers  # same host: no CORS needed
    r = requests.get(base(farm) + "/v1/envs/", timeout=30)
    assert "Access-Control-Allow-Origin" not in r.headers


def test_a_token_farm_answers_the_preflight_but_not_the_request_without_the_token(start_farm):
    farm = start_farm(workers=1, args=["--allow-origin", APP, "--require-token"])
    r = preflight(base(farm) + "/v1/envs/", APP)
    assert r.status_code == 204 and r.headers["Access-Control-Allow-Origin"] == APP
    r = requests.post(base(farm) + "/v1/envs/", json={"env_id": "CartPole-v1"}, headers={"Origin": APP}, timeout=30)
    assert r.status_code == 401
    r = requests.post(base(farm) + "/v1/envs/", json={"env_id": "CartPole-v1"},
                      headers={"Origin": APP, "Authorization": f"Bearer {farm.token}"}, timeout=30)
    assert r.status_code == 200 and r.headers["Access-Control-Allow-Origin"] == APP
