"""Reference server for benchmark P5, written for the benchmark in the style of gym-http-api: a
Flask app on Flask's development server, single-threaded, one global table of Gymnasium envs.
Only the routes the benchmark drives: make, reset, step. Not part of gymfarm.

    python flask_gym_http.py PORT      (prints "listening PORT" once it accepts connections)
"""
import sys
import uuid

import gymnasium as gym
from flask import Flask, jsonify, request

from common import plain  # bench/reference/common.py (this script's folder is on sys.path)

app = Flask(__name__)
envs = {}


@app.post("/v1/envs/")
def make():
    instance_id = uuid.uuid4().hex[:8]
    envs[instance_id] = gym.make(request.get_json()["env_id"])
    return jsonify(instance_id=instance_id)


@app.post("/v1/envs/<instance_id>/reset/")
def reset(instance_id):
    obs, _ = envs[instance_id].reset()
    return jsonify(observation=plain(obs))


@app.post("/v1/envs/<instance_id>/step/")
def step(instance_id):
    env = envs[instance_id]
    action = request.get_json()["action"]
    obs, reward, terminated, truncated, info = env.step(action)
    return jsonify(observation=plain(obs), reward=float(reward), done=bool(terminated or truncated), info={})


if __name__ == "__main__":
    import logging

    from werkzeug.serving import WSGIRequestHandler

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    WSGIRequestHandler.protocol_version = "HTTP/1.1"  # keep-alive, as the load generator uses it
    port = int(sys.argv[1])
    print(f"listening {port}", flush=True)
    app.run(host="127.0.0.1", port=port, threaded=False)
