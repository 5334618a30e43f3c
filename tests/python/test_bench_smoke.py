"""A smoke run of the benchmark harness (bench/run --quick on two scenario groups), so the harness,
the load generator and the reference servers keep working. It checks that the results are written
and ratios only with wide margins, never absolute times (docs/benchmarks.md has the real numbers)."""
import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_quick_smoke(tmp_path):
    r = subprocess.run([str(ROOT / ".venv" / "bin" / "python"), str(ROOT / "bench" / "harness.py"), "--quick",
                        "--pairs", "1", "--only", "P4,P7", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (result,) = tmp_path.glob("*.json")
    data = json.loads(result.read_text())
    assert {row["scenario"] for row in data["rows"]} == {"P4", "P5", "P7", "P8"}
    assert (tmp_path / result.name.replace(".json", ".md")).exists()
    assert (tmp_path / result.name.replace(".json", ".csv")).exists()
    assert list(tmp_path.glob("*-latency.png")) and list(tmp_path.glob("*-spawn-memory.png"))
    s = data["summary"]
    # wide margins: the zygote starts workers faster and they share memory; the servers answered
    assert s["P7"]["ratio"]["median"] > 1.2
    assert s["P8"]["ratio"]["median"] > 1.5
    for sc in ("P4", "P5"):
        assert s[sc]["medians"]["gymfarm_per_s"] > 0 and s[sc]["medians"]["reference_per_s"] > 0
