"""The local service: a Prefect server on loopback, a process worker for the project's work pool, and
the deployments of `prefect.yaml` (`make serve` / `make stop`, and the integration test).

It drives the `prefect` command line in child processes, so it imports no Prefect itself. All state
lives in one `PREFECT_HOME` (the project's `var/prefect` by default): the server's SQLite database,
a profile pointing the `prefect` CLI at this server, logs, and the PID files `stop` reads.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from atnn.config import PROJECT_ROOT

WORK_POOL = "atnn-local"  # the pool of every deployment in prefect.yaml
PROFILE = "atnn"  # the Prefect profile `start` writes into PREFECT_HOME/profiles.toml and `stop` removes


class ServiceError(RuntimeError):
    """The server or worker did not start, or a deployment step failed; the message says which."""


@dataclass(frozen=True)
class Service:
    prefect_home: Path
    host: str = "127.0.0.1"
    port: int = 4200
    project_dir: Path = PROJECT_ROOT

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.port}/api"

    @property
    def ui_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def pid_file(self, name: str) -> Path:
        return self.prefect_home / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.prefect_home / f"{name}.log"

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The environment of the server, worker and CLI calls (and so of every flow run)."""
        env = dict(os.environ)
        env.update(
            PREFECT_HOME=str(self.prefect_home),
            PREFECT_API_URL=self.api_url,
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PREFECT_SERVER_API_HOST=self.host,
            PREFECT_SERVER_API_PORT=str(self.port),
            ATNN_PROJECT_DIR=str(self.project_dir),  # the worker's pull step: run flows from this checkout
            # Pick up a triggered run within a couple of seconds, not the default 10.
            PREFECT_WORKER_QUERY_SECONDS=env.get("PREFECT_WORKER_QUERY_SECONDS", "2"),
        )
        env.update(extra or {})
        return env


def _prefect() -> str:
    local = Path(sys.executable).with_name("prefect")
    return str(local) if local.exists() else "prefect"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours counts as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][0] != "Z"
    except OSError:
        return False


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def healthy(api_url: str, timeout_s: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=timeout_s) as response:
            return response.status == 200
    except OSError:
        return False


def _spawn(service: Service, name: str, args: list[str], env: dict[str, str]) -> int:
    log = open(service.log_file(name), "ab")
    try:
        # A session of its own: `stop` can signal the process and every child it started, and nothing else.
        process = subprocess.Popen(
            args, cwd=service.project_dir, env=env, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
    finally:
        log.close()
    service.pid_file(name).write_text(str(process.pid))
    return process.pid


def _run(service: Service, args: list[str], env: dict[str, str], what: str, timeout_s: float = 180) -> str:
    result = subprocess.run(args, cwd=service.project_dir, env=env, capture_output=True, text=True, timeout=timeout_s)
    if result.returncode != 0:
        raise ServiceError(f"{what} failed (exit {result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result.stdout


def start(service: Service, *, extra_env: dict[str, str] | None = None, deploy: bool = True,
          timeout_s: float = 120) -> dict[str, int]:
    """Start the server, create the work pool, deploy prefect.yaml, start the worker; returns the PIDs."""
    service.prefect_home.mkdir(parents=True, exist_ok=True)
    env = service.env(extra_env)
    for name in ("server", "worker"):
        pid = _read_pid(service.pid_file(name))
        if pid and _alive(pid):
            raise ServiceError(f"a {name} of this PREFECT_HOME is already running (pid {pid}); `make stop` first")
    if healthy(service.api_url):
        raise ServiceError(f"something already answers on {service.api_url}; stop it or choose another port")
    pids = {"server": _spawn(service, "server", [_prefect(), "server", "start", "--host", service.host,
                                                  "--port", str(service.port)], env)}
    deadline = time.monotonic() + timeout_s
    while not healthy(service.api_url):
        if not _alive(pids["server"]) or time.monotonic() > deadline:
            stop(service)
            raise ServiceError(f"the Prefect server did not come up on {service.api_url}; see {service.log_file('server')}")
        time.sleep(0.5)
    try:
        # The `prefect` CLI of anyone using this PREFECT_HOME talks to this server (a profile, as
        # `prefect config set` would write it, without starting one more CLI).
        (service.prefect_home / "profiles.toml").write_text(profile_text(service.api_url))
        _run(service, [_prefect(), "work-pool", "create", WORK_POOL, "--type", "process", "--overwrite"], env,
             f"creating work pool {WORK_POOL}")
        if deploy:
            _run(service, [_prefect(), "--no-prompt", "deploy", "--all"], env, "prefect deploy --all")
        pids["worker"] = _spawn(service, "worker", [_prefect(), "worker", "start", "--pool", WORK_POOL,
                                                    "--type", "process", "--name", f"atnn-{os.getpid()}"], env)
    except Exception:
        stop(service)
        raise
    (service.prefect_home / "service.json").write_text(
        json.dumps({"api_url": service.api_url, "ui_url": service.ui_url, **pids}, indent=2)
    )
    return pids


def _stop_one(pid: int, timeout_s: float) -> bool:
    """SIGINT (twice: a Prefect worker asks for a second one to stop at once), then SIGTERM, then SIGKILL.

    Each signal goes to the process group the process leads (see `_spawn`), so children stop too.
    """
    for sig in (signal.SIGINT, signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + (timeout_s if sig != signal.SIGKILL else 5)
        while time.monotonic() < deadline:
            if not _group_alive(pid):
                return True
            time.sleep(0.2)
    return not _group_alive(pid)


def _group_alive(pgid: int) -> bool:
    """Whether any live process is left in the process group `pgid`."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        # fields: state, ppid, pgrp, ...
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def stop(service: Service, timeout_s: float = 10) -> dict[str, bool]:
    """Stop the worker first (so no new flow run starts), then the server; remove the PID files."""
    stopped = {}
    for name in ("worker", "server"):
        pid = _read_pid(service.pid_file(name))
        if pid is None:
            continue
        stopped[name] = _stop_one(pid, timeout_s)
        # Wait until it is reaped (by us if it is our child, as in the tests, else by init), so that
        # nothing, not even a zombie, is listed afterwards.
        deadline = time.monotonic() + 5
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
            time.sleep(0.1)
        service.pid_file(name).unlink(missing_ok=True)
    (service.prefect_home / "service.json").unlink(missing_ok=True)
    # Without the server, the profile would send every later flow run (atnn demo, rank, ...) to a
    # closed port; gone, they run in-process again.
    if service_profile(service.prefect_home) is not None:
        (service.prefect_home / "profiles.toml").unlink(missing_ok=True)
    return stopped


def profile_text(api_url: str) -> str:
    """The profiles.toml `start` writes: the `prefect` CLI and every flow run use the server at `api_url`."""
    return (f'active = "{PROFILE}"\n\n[profiles.{PROFILE}]\nPREFECT_API_URL = "{api_url}"\n'
            'PREFECT_SERVER_ANALYTICS_ENABLED = "false"\n')


def service_profile(prefect_home: Path) -> str | None:
    """The API URL of the profile `start` wrote into `prefect_home`, or None if there is none (a
    profiles.toml of the user's own is not ours and is left alone)."""
    try:
        text = (prefect_home / "profiles.toml").read_text()
    except OSError:
        return None
    found = re.search(r'^PREFECT_API_URL = "([^"]*)"$', text, re.MULTILINE)
    return found.group(1) if text.startswith(f'active = "{PROFILE}"\n') and found else None


def check_profile(prefect_home: Path) -> None:
    """Refuse to run flows against the server of a `make serve` that is no longer up."""
    url = service_profile(prefect_home)
    if url is not None and not healthy(url):
        raise ServiceError(
            f"{prefect_home / 'profiles.toml'} (written by `make serve`) sends flow runs to the Prefect server at "
            f"{url}, and nothing answers there: it was stopped without `make stop`, or it died. "
            "`make serve` starts it again; `make stop` clears the profile so flows run in-process."
        )


def status(service: Service) -> dict[str, object]:
    return {
        name: (pid if pid and _alive(pid) else None)
        for name, pid in ((n, _read_pid(service.pid_file(n))) for n in ("server", "worker"))
    } | {"healthy": healthy(service.api_url)}
