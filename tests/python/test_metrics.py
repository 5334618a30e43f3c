"""GET /metrics (docs/operations.md "Monitoring"): Prometheus text written by prometheus-cpp from
the broker's `stats`, on every HTTP port and alone on --metrics-port; a real Prometheus scrapes a
farm and answers PromQL with the steps the test made."""
import re
import shutil
import signal
import socket
import subprocess
import time

import numpy as np
import pytest
import requests

import gymfarm
from farm_fixture import wait_until

SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})? (\S+)$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(url, **kw) -> dict[str, float]:
    """{'name{labels}': value} of one scrape, labels in name order; checks every line is a comment
    or a sample."""
    r = requests.get(url, timeout=30, **kw)
    assert r.status_code == 200, (r.status_code, r.text)
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    out = {}
    for line in r.text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, line
        labels = sorted(LABEL.findall(m.group(2) or ""))
        key = m.group(1) + ("{" + ",".join(f'{k}="{v}"' for k, v in labels) + "}" if labels else "")
        out[key] = float(m.group(3))
    return out


def play(c, envs: int, steps: int) -> int:
    """Makes `envs` envs and steps each `steps` times one by one and once in a step_batch."""
    made = [c.make("CartPole-v1") for _ in range(envs)]
    for i, e in enumerate(made):
        e.reset(seed=i)
        for _ in range(steps):
            _, _, term, trunc, _ = e.step(0)
            if term or trunc:
                e.reset()
    c.step_batch([(e.instance_id, 1) for e in made])
    return envs * steps + envs


def test_metrics_count_steps_requests_and_latency(start_farm):
    port = free_port()
    farm = start_farm(workers=2, args=["--metrics-port", str(port)])
    url = f"http://127.0.0.1:{port}/metrics"
    with farm.connect(shm=False) as c:  # requests counted where they reach the broker: over the socket
        made = play(c, envs=2, steps=7)
        with pytest.raises(gymfarm.UnknownInstance):
            c.call("step", "0" * 32, {"action": 0})  # an error: counted under its code
        for i in range(3):  # verbs a client makes up are one label value, not one each
            with pytest.raises(gymfarm.GymfarmError):
                c.call(f"made-up-verb-{i}")
        stats = c.stats()
        m = scrape(url)  # while the session and its instances live
    assert m["gymfarm_env_steps_total"] == made == stats["env_steps"]
    assert m['gymfarm_requests_total{code="ok",verb="step"}'] == 2 * 7  # a step_batch's parts count as steps only
    assert m['gymfarm_requests_total{code="unknown_instance",verb="step"}'] == 1
    assert m['gymfarm_requests_total{code="ok",verb="step_batch"}'] >= 1
    assert sum(v for k, v in m.items() if k.startswith("gymfarm_requests_total{") and 'verb="other"' in k) == 3
    assert not any("made-up" in k for k in m)
    assert m['gymfarm_requests_total{code="ok",verb="make"}'] == 2
    assert m['gymfarm_request_duration_seconds_count{verb="step"}'] == 2 * 7 + 1
    assert m['gymfarm_request_duration_seconds_bucket{le="+Inf",verb="step"}'] == 2 * 7 + 1
    assert m['gymfarm_request_duration_seconds_sum{verb="step"}'] > 0
    assert m['gymfarm_workers{state="assigned"}'] == 2 and m['gymfarm_workers{state="dead"}'] == 0
    assert m['gymfarm_instances{dialect="native"}'] == 2
    assert m['gymfarm_instances{dialect="gymie"}'] == m['gymfarm_instances{dialect="rest"}'] == 0
    assert m["gymfarm_pool_warm_workers"] == 2
    assert m["gymfarm_restart_budget_limit"] == stats["restart_budget"]["limit"]
    assert all(v > 0 for k, v in m.items() if k.startswith("gymfarm_worker_rss_bytes"))
    assert m['gymfarm_connections{frontend="metrics"}'] == 1  # this scrape
    # the main port serves it too; the metrics port serves nothing else
    assert scrape(farm.rest_url.removesuffix("/v1/") + "/metrics")["gymfarm_env_steps_total"] == made
    assert requests.get(f"http://127.0.0.1:{port}/v1/envs/", timeout=30).status_code == 404
    assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=30).text == "ok\n"


def test_a_token_farm_wants_the_token_for_metrics(start_farm):
    farm = start_farm(workers=1, args=["--require-token"])
    url = farm.rest_url.removesuffix("/v1/") + "/metrics"
    r = requests.get(url, timeout=30)
    assert r.status_code == 401 and "gymfarm_" not in r.text
    assert "gymfarm_env_steps_total" in scrape(url, headers={"Authorization": f"Bearer {farm.token}"})


def start_prometheus(tmp_path, config: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    (tmp_path / "prometheus.yml").write_text(config)
    log = open(tmp_path / "prometheus.log", "w")
    proc = subprocess.Popen(
        ["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return proc, f"http://127.0.0.1:{port}"


def stop_prometheus(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def query(api: str, promql: str):
    try:
        r = requests.get(api + "/api/v1/query", params={"query": promql}, timeout=5)
    except requests.RequestException:
        return None
    if r.status_code != 200:
        return None
    result = r.json()["data"]["result"]
    return float(result[0]["value"][1]) if result else None


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="no prometheus binary (Debian: prometheus)")
def test_a_real_prometheus_scrapes_the_farm(start_farm, tmp_path):
    port = free_port()
    farm = start_farm(workers=2, args=["--metrics-port", str(port), "--require-token"])
    c = farm.connect(token=farm.token, shm=False)
    made = play(c, envs=3, steps=5)
    config = f"""global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: gymfarm
    metrics_path: /metrics
    authorization:
      type: Bearer
      credentials: {farm.token}
    static_configs:
      - targets: ["127.0.0.1:{port}"]
"""
    proc, api = start_prometheus(tmp_path, config)
    try:
        got = []
        ok = wait_until(lambda: got.append(query(api, "gymfarm_env_steps_total")) or got[-1] == made, 60, 0.5)
        assert ok, (got[-5:], (tmp_path / "prometheus.log").read_text()[-3000:])
        assert query(api, 'up{job="gymfarm"}') == 1
        assert query(api, 'sum(gymfarm_requests_total{verb="step",code="ok"})') == 3 * 5
        # more steps while it scrapes: the series follows, and its increase over the window is them
        more = play(c, envs=1, steps=4)
        assert wait_until(lambda: query(api, "gymfarm_env_steps_total") == made + more, 30, 0.5)
        assert query(api, "max_over_time(gymfarm_env_steps_total[1m]) - min_over_time(gymfarm_env_steps_total[1m])") \
            == more
        time.sleep(3)  # no steps since: the rate over the last seconds is 0
        assert query(api, "rate(gymfarm_env_steps_total[3s])") == 0
    finally:
        stop_prometheus(proc)
        c.close()


def test_a_vector_envs_steps_count_each_row_and_its_request_once(start_farm):
    farm = start_farm(workers=2)
    url = farm.rest_url.removesuffix("/v1/") + "/metrics"
    with farm.connect(shm=False) as c:
        vec = c.make_vec("CartPole-v1", num_envs=2)
        vec.reset(seed=0)
        for _ in range(3):
            vec.step(np.array([0, 1]))
        m = scrape(url)
        vec.close()
    assert m["gymfarm_env_steps_total"] == 2 * 3
    batched = sum(v for k, v in m.items()
                  if k in ('gymfarm_requests_total{code="ok",verb="step_vec"}',
                           'gymfarm_requests_total{code="ok",verb="step_batch"}'))
    assert batched == 3
    assert 'gymfarm_requests_total{code="ok",verb="step"}' not in m


def test_restarts_by_reason_over_the_farms_lifetime(start_farm):
    import os

    from farm_fixture import wait_until

    port = free_port()
    farm = start_farm(workers=2, args=["--metrics-port", str(port), "--restart-window", "1"])
    url = f"http://127.0.0.1:{port}/metrics"
    with farm.connect() as c:
        for _ in range(2):
            pid = c.stats()["workers"][0]["pid"]
            os.kill(pid, signal.SIGKILL)
            assert wait_until(lambda gone=pid: all(w["state"] in ("idle", "assigned") and w["pid"] != gone
                                                   for w in c.stats()["workers"]), 30)
        time.sleep(1.5)  # past the budget's window: only the lifetime counter still has them
        m = scrape(url)
    assert m['gymfarm_worker_restarts_by_reason_total{reason="killed_sigkill"}'] == 2
    assert m.get("gymfarm_restart_budget_used") == 0
