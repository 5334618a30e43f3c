"""scripts/lint against a scratch checkout holding the project's lint configuration: it passes clean
files, fails on each kind of finding (clang-format, ruff, clang-tidy), and --fix repairs what it can."""
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = [".clang-format", ".clang-tidy", "ruff.toml", ".gitignore", "scripts/lint"]
TOOLS = ["clang-format", "clang-tidy", "run-clang-tidy"]

CLEAN_CPP = """#include <string>

namespace demo {

int twice(int x) { return 2 * x; }

}  // namespace demo
"""
BADLY_FORMATTED_CPP = "namespace demo {\nint   twice( int x ){return 2*x;}\n}\n"
FORMATTED_CPP = "namespace demo {\nint twice(int x) { return 2 * x; }\n}  // namespace demo\n"
TIDY_FINDING_CPP = """#include <cstdlib>

namespace demo {

int parse(const char* s) { return std::atoi(s); }

}  // namespace demo
"""
CLEAN_PY = "import os\n\n\ndef here():\n    return os.getcwd()\n"
UNUSED_IMPORT_PY = "import os\nimport sys\n\n\ndef here():\n    return os.getcwd()\n"


@pytest.fixture
def checkout(tmp_path):
    missing = [t for t in TOOLS if shutil.which(t) is None] + ([] if (ROOT / ".venv/bin/ruff").exists() else ["ruff"])
    if missing:
        pytest.fail(f"lint tools missing (scripts/install installs them): {missing}")
    repo = tmp_path / "repo"
    for rel in CONFIGS:
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, repo / rel)
    (repo / ".venv").symlink_to(ROOT / ".venv")
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "protocol").mkdir()
    (repo / "python").mkdir()
    return repo


def write_unit(repo, rel, text):
    """Writes a C++ file and a compile database naming it, as CMake's export would."""
    path = repo / rel
    path.write_text(text)
    (repo / "build").mkdir(exist_ok=True)
    entry = {"directory": str(repo / "build"), "file": str(path),
             "command": f"c++ -std=gnu++20 -I{repo} -c {path} -o {repo / 'build' / 'unit.o'}"}
    (repo / "build/compile_commands.json").write_text(json.dumps([entry]))


def lint(repo, *args):
    env = dict(os.environ, GYMFARM_LINT_JOBS="1")
    return subprocess.run(["bash", str(repo / "scripts/lint"), *args], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=240)


def test_clean_files_pass(checkout):
    write_unit(checkout, "protocol/unit.cpp", CLEAN_CPP)
    (checkout / "python/mod.py").write_text(CLEAN_PY)
    r = lint(checkout)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 C++ files" in r.stdout and "1 Python files" in r.stdout and "1 translation units" in r.stdout
    assert r.stdout.rstrip().endswith("[lint] ok")


def test_format_and_ruff_findings_fail_and_fix_repairs_them(checkout):
    (checkout / "protocol/unit.cpp").write_text(BADLY_FORMATTED_CPP)
    (checkout / "python/mod.py").write_text(UNUSED_IMPORT_PY)
    r = lint(checkout, "--no-tidy")
    assert r.returncode == 1
    assert "FAILED: clang-format" in r.stderr and "ruff" in r.stderr
    assert "F401" in r.stdout

    r = lint(checkout, "--no-tidy", "--fix")
    assert r.returncode == 0, r.stdout + r.stderr
    assert (checkout / "protocol/unit.cpp").read_text() == FORMATTED_CPP
    assert (checkout / "python/mod.py").read_text() == CLEAN_PY


def test_tidy_finding_fails(checkout):
    write_unit(checkout, "protocol/unit.cpp", TIDY_FINDING_CPP)
    r = lint(checkout)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "cert-err34-c" in r.stdout and "\x1b[" not in r.stdout  # the finding, without terminal colours
    assert "FAILED: clang-tidy" in r.stderr


def test_paths_limit_what_is_linted(checkout):
    (checkout / "protocol/unit.cpp").write_text(BADLY_FORMATTED_CPP)
    (checkout / "python/mod.py").write_text(CLEAN_PY)
    r = lint(checkout, "--no-tidy", "python")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 C++ files" in r.stdout and "1 Python files" in r.stdout
