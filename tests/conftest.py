import os

import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@pytest.fixture(autouse=True)
def _in_tmp_cwd(tmp_path, monkeypatch):
    """Run each test in its own folder, so nothing (MUJOCO_LOG.TXT included) lands in the repo."""
    monkeypatch.chdir(tmp_path)
