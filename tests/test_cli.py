"""The `atnn` command's checks that run before any flow starts (fast: no Prefect server is started)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from atnn.service import Service, check_profile, profile_text, service_profile, stop


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # free once the socket closes: nothing answers there


def write_service_profile(prefect_home: Path, port: int) -> None:
    prefect_home.mkdir(parents=True, exist_ok=True)
    (prefect_home / "profiles.toml").write_text(profile_text(f"http://127.0.0.1:{port}/api"))


def atnn(*args: str, prefect_home: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")} | {"PREFECT_HOME": str(prefect_home)}
    return subprocess.run([sys.executable, "-m", "atnn.cli", *args], env=env, capture_output=True, text=True, timeout=120)


def test_a_profile_left_by_a_stopped_service_is_refused_with_the_way_out(tmp_path):
    port = closed_port()
    write_service_profile(tmp_path / "prefect", port)
    result = atnn("rank", "--home", str(tmp_path), "--date", "1998-04-05", prefect_home=tmp_path / "prefect")
    assert result.returncode == 2
    message = result.stderr.strip().splitlines()[-1]
    assert str(tmp_path / "prefect" / "profiles.toml") in message and f"127.0.0.1:{port}" in message
    assert "make stop" in message and "Traceback" not in result.stderr


def test_stop_removes_the_service_profile_and_leaves_a_users_own(tmp_path):
    home = tmp_path / "prefect"
    write_service_profile(home, closed_port())
    assert service_profile(home) is not None
    with pytest.raises(RuntimeError, match="nothing answers there"):
        check_profile(home)
    assert stop(Service(prefect_home=home)) == {}  # nothing was running
    assert not (home / "profiles.toml").exists()
    check_profile(home)  # no profile: flows run in-process

    own = 'active = "mine"\n\n[profiles.mine]\nPREFECT_API_URL = "http://127.0.0.1:1/api"\n'
    (home / "profiles.toml").write_text(own)
    assert service_profile(home) is None
    stop(Service(prefect_home=home))
    assert (home / "profiles.toml").read_text() == own


@pytest.mark.parametrize("args, named", [
    (("rank", "--date", "1998-13-40"), "argument --date: '1998-13-40'"),
    (("demo", "--date", "04/05/1998"), "argument --date: '04/05/1998'"),
    (("train", "--as-of", "1998-02-30"), "argument --as-of: '1998-02-30'"),
])
def test_a_bad_date_is_refused_before_any_flow_starts(tmp_path, args, named):
    result = atnn(*args, "--home", str(tmp_path), prefect_home=tmp_path / "prefect")
    assert result.returncode == 2
    assert named in result.stderr
    assert not (tmp_path / "atnn.duckdb").exists()
