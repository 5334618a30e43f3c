"""The chaos suite: client operations on all three frontends while a nemesis kills, stops and
starves workers and kills the broker, and envs raise, segfault, hang, leak, return NaN/inf and
100 MB observations; then the checker judges the whole history (see chaos.py).

Bounded: GYMFARM_CHAOS_SECONDS (default 40) of load plus start-up and settling."""
import os

from chaos import Chaos


def test_chaos_history_keeps_the_failure_contract(tmp_path):
    seconds = float(os.environ.get("GYMFARM_CHAOS_SECONDS", "40"))
    chaos = Chaos(tmp_path, workers=5, seed=int(os.environ.get("GYMFARM_CHAOS_SEED", "1")))
    try:
        chaos.run(seconds)
    finally:
        chaos.stop()
    print()
    print(chaos.history.summary())
    violations = chaos.check()
    for line in violations[:40]:
        print("VIOLATION:", line)
    assert not violations, f"{len(violations)} violations (first: {violations[0]})"
    # the run must have exercised what it claims to
    kinds = {k for _, k, _ in chaos.history.faults}
    assert {"kill9", "broker_kill9"} <= kinds, kinds
    assert any(k.startswith("zygote_") for k in kinds), kinds  # stopped, or killed earlier at random
    outcomes = {o.outcome for o in chaos.history.ops}
    assert "ok" in outcomes and "worker_crashed" in outcomes, outcomes
