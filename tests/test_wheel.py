"""The built wheel behaves as the source tree: the presets ship inside the package.

The wheel is built from a copy of the sources (so no build/ lands in the checkout), installed
with --no-deps into a fresh folder, and run with this interpreter and PYTHONPATH set to that
folder: the heavy dependencies come from this environment, nothing is downloaded.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def _run(args, cwd, env=None):
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_wheel_install_uses_the_packaged_nav2d_preset(tmp_path):
    source = tmp_path / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for package in ("safemaml", "objectives"):
        shutil.copytree(ROOT / package, source / package, ignore=ignore)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", "dist", "./source"],
         cwd=tmp_path)
    wheel = next((tmp_path / "dist").glob("safemaml-*.whl"))
    _run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", "site", str(wheel)], cwd=tmp_path)

    elsewhere = tmp_path / "elsewhere"  # no source tree on the path: only the installed copy
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    where = _run([sys.executable, "-c", "import safemaml.config as c; print(c.__file__)"], elsewhere, env)
    assert Path(where.stdout.strip()).is_relative_to(tmp_path / "site")
    printed = _run([sys.executable, "-m", "safemaml", "train", "--tasks", "nav2d", "--print-config"], elsewhere, env)
    assert list(elsewhere.iterdir()) == []  # --print-config writes nothing

    with (ROOT / "safemaml" / "presets" / "nav2d.toml").open("rb") as f:
        preset = tomllib.load(f)
    resolved = tomllib.loads(printed.stdout)
    for key in ("tasks", "iterations", "meta_batch_size", "fast_batch_size", "post_batch_size"):
        assert resolved[key] == preset[key]
    assert resolved["policy"]["hidden"] == preset["policy"]["hidden"] == [64, 64]  # not halfcheetah-vel's 100x100

    editable = _run([sys.executable, "-m", "safemaml", "train", "--tasks", "nav2d", "--print-config"], elsewhere,
                    {**os.environ, "PYTHONPATH": str(ROOT)})
    assert printed.stdout == editable.stdout
