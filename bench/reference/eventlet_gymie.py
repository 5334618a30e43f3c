"""Reference server for benchmark P4, written for the benchmark in the style of Gymie: an eventlet
WebSocket server speaking {"method", "params"} JSON frames over a global table of Gymnasium envs.
Only the methods the benchmark drives: make, reset, step. Not part of gymfarm.

    python eventlet_gymie.py PORT      (prints "listening PORT" once it accepts connections)
"""
import json
import sys
import uuid
import warnings

warnings.simplefilter("ignore")

import eventlet  # noqa: E402
import gymnasium as gym  # noqa: E402
from eventlet import websocket, wsgi  # noqa: E402

from common import plain  # noqa: E402  (bench/reference/common.py)

envs = {}


@websocket.WebSocketWSGI
def handle(ws):
    while True:
        raw = ws.wait()
        if raw is None:
            return
        msg = json.loads(raw)
        method, params = msg["method"], msg["params"]
        if method == "make":
            instance_id = uuid.uuid4().hex
            envs[instance_id] = gym.make(params["env_id"])
            ws.send(instance_id)
        elif method == "reset":
            obs, _ = envs[params["instance_id"]].reset()
            ws.send(json.dumps(plain(obs)))
        elif method == "step":
            obs, reward, terminated, truncated, info = envs[params["instance_id"]].step(params["action"])
            ws.send(json.dumps([plain(obs), float(reward), bool(terminated or truncated), {}]))


if __name__ == "__main__":
    port = int(sys.argv[1])
    sock = eventlet.listen(("127.0.0.1", port))
    print(f"listening {port}", flush=True)
    wsgi.server(sock, handle, log_output=False)
