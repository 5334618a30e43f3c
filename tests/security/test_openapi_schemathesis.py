"""Finding 13 (the API document): /openapi.json was inaccurate where a schema checker looked
(schemathesis: ST103 undocumented status codes, ST202 schema-valid requests rejected, ST204
undeclared methods, ST302). Each REST port now serves its own dialect's document, and
schemathesis runs against both, positive and negative data, a bounded number of examples per
operation, failing on any 5xx, undocumented status or content type, or response schema violation.

Instance ids the farm never made are answered 400 (`Instance_id <id> unknown`), as the originals
do, and so are env ids that cannot be made: the schema cannot express "an id that exists", so those
operations accept 400 for schema-valid data (schemathesis.toml below). A hook puts live CartPole
ids into half of the requests of the operations that are safe for any schema-valid input (and a
valid action into step); the drop-in 500s (an invalid action, a non-integer `contains/{x}`, an
unknown observation_space property) stay reachable only with ids the farm never made."""
import os
import subprocess
import sys
import time
from pathlib import Path

import requests

VENV_BIN = Path(sys.executable).parent
SCHEMATHESIS = VENV_BIN / "schemathesis"

HOOKS = '''
import os
import random

import schemathesis

REAL = [i for i in os.environ.get("GF_LIVE_IDS", "").split(",") if i]
LIVE = ("/reset", "/step", "/action_space", "/action_space/sample", "/observation_space", "/render", "/render.png",
        "/transitions", "/episodes", "/monitor/close")
rng = random.Random(1)


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    path = case.operation.path.rstrip("/")
    if not REAL or "{instance_id}" not in path or not path.endswith(LIVE):
        return
    params = case.path_parameters
    if params.get("instance_id") not in REAL and rng.random() < 0.5:
        return
    params["instance_id"] = rng.choice(REAL)
    if path.endswith("/step") and hasattr(case.body, "keys"):
        case.body["action"] = rng.choice([0, 1])  # valid for CartPole; an invalid action is the dialect's 500
    if path.endswith("/episodes") and hasattr(case.body, "keys") and isinstance(case.body.get("count"), int):
        case.body["count"] = min(case.body["count"], 3)  # live episodes cost real steps; the cap has its own test
'''

CONFIG = '''
[[operations]]
include-path-regex = "\\\\{instance_id\\\\}|^/v1/envs/?$"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "409"]

[phases.fuzzing.extra-data-sources]
responses = false

[phases.coverage.extra-data-sources]
responses = false
'''


def test_schemathesis_on_both_rest_ports(start_farm, tmp_path):
    assert SCHEMATHESIS.exists(), "schemathesis is in scripts/requirements.txt"
    farm = start_farm(workers=6)
    (tmp_path / "gf_schemathesis_hooks.py").write_text(HOOKS)
    (tmp_path / "schemathesis.toml").write_text(CONFIG)
    started = time.monotonic()
    for name, url in (("gym-http-api", farm.rest_url), ("gymnasium-http-api", farm.gymnasium_url)):
        base = url.rstrip("/").removesuffix("/v1")
        live = []
        for _ in range(2):
            r = requests.post(base + "/v1/envs/", json={"env_id": "CartPole-v1"}, timeout=60)
            assert r.status_code == 200, r.text
            live.append(r.json()["instance_id"])
            assert requests.post(base + f"/v1/envs/{live[-1]}/reset/", json={}, timeout=60).status_code == 200
        env = dict(os.environ, GF_LIVE_IDS=",".join(live), SCHEMATHESIS_HOOKS="gf_schemathesis_hooks",
                   PYTHONPATH=str(tmp_path), NO_COLOR="1")
        cmd = [str(SCHEMATHESIS), "--config-file", str(tmp_path / "schemathesis.toml"), "run", base + "/openapi.json",
               "--checks", "all", "--mode", "all", "--phases", "examples,coverage,fuzzing", "--max-examples", "5",
               "--seed", "1", "--max-time", "20", "--request-timeout", "20", "--workers", "1"]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=150, env=env, cwd=tmp_path)
        assert r.returncode == 0, (f"schemathesis found problems on the {name} port:\n"
                                   f"{r.stdout[-20000:]}\n{r.stderr[-3000:]}")
        assert "passed" in r.stdout or "No issues found" in r.stdout, r.stdout[-3000:]
        for iid in live:
            requests.delete(base + f"/v1/envs/{iid}/", timeout=30) if name != "gym-http-api" else \
                requests.post(base + f"/v1/envs/{iid}/close/", timeout=30)
    assert time.monotonic() - started < 150
