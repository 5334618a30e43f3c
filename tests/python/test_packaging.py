"""`pip install ./python` gives a working package outside the repository."""
import subprocess
import sys


def test_pip_install_python_folder(tmp_path):
    target = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--quiet",
                        "--target", str(target), "python/"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    installed = {p.name for p in (target / "gymfarm").iterdir()}
    assert {"__init__.py", "client.py", "env.py", "vector.py", "sb3.py", "codec.py", "errors.py",
            "registration.py", "py.typed"} <= installed
    code = "import gymfarm, gymfarm.sb3; print(gymfarm.__file__)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                       env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}, timeout=60)
    assert r.returncode == 0, r.stderr
    assert str(target) in r.stdout
