"""The district's PostgreSQL made highly available, on one machine, for tests/district/test_ha.py and
bench/district_ha.py: one etcd (v3 API), two or three Patroni members each managing its own PostgreSQL 15, and a
pgbouncer (session pooling) in front of each member's PostgreSQL, all on loopback in a temporary directory on
free ports. Each member stands for one of the district's servers; `kill_primary()` SIGKILLs what runs on the
primary's (its Patroni, its PostgreSQL, its pgbouncer), as a server dying.

Choices (README, "PostgreSQL failover for the district", says why for a real district):

- `synchronous_mode` with `synchronous_mode_strict`: a commit returns only once a standby has the WAL, and with
  no standby left the primary holds its commits instead of going on alone. A district worker acknowledges a
  NATS message after its commit, so a row only the old primary had would be an acknowledged event lost; with
  strict mode the primary never acknowledges such a row (JetStream keeps the messages meanwhile). Patroni
  promotes only the standby named in its /sync key, and `maximum_lag_on_failover` bounds the rest.
- Each pgbouncer lets the district in only while its PostgreSQL is the primary: a Patroni callback (on_start,
  on_stop, on_restart, on_role_change; docs/district-ha/pgbouncer-role) runs `DISABLE`/`KILL`/`RESUME` on a standby
  and, once the promoted server has left recovery, `RECONNECT` and `ENABLE`. Without it pgbouncer 1.18 answers a
  login from the parameters it cached at its pool's first server login, `in_hot_standby` among them: a standby
  promoted stays "in hot standby" for libpq's `target_session_attrs=read-write`, and a demoted primary stays
  "read-write" (pgbouncer issue #859).
- The district connects with a libpq multi-host URL through the pgbouncers (`url()`), `target_session_attrs=
  read-write`: each new connection tries the hosts in turn and keeps the first that is the primary.

Runs as the `postgres` system user when the tests run as root (PostgreSQL refuses root); the temporary directory
is made its own. Every process started here has its own process group, and `stop()` leaves none behind
(`processes()` finds anything still naming the directory).
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import Engine, create_engine

from gateway.district import store
from gateway.district.config import DistrictDatabase
from tests.support import ROOT, free_port, wait_for

PG_BIN = Path(os.environ.get("CAMPUSGW_PG_BIN", "/usr/lib/postgresql/15/bin"))
DATABASE = "district"
USER = "district"
RUN_AS = "postgres"  # when root: the system user PostgreSQL runs as
CALLBACK = ROOT / "docs" / "district-ha" / "pgbouncer-role"


def binary(name: str, *extra: str) -> str | None:
    for found in (shutil.which(name), *extra):
        if found and Path(found).exists():
            return found
    return None


def missing_tools() -> str | None:
    """Why the harness cannot run here, or None (Debian: apt-get install patroni etcd-server pgbouncer)."""
    wanted = {"patroni": binary("patroni"), "etcd": binary("etcd"),
              "pgbouncer": binary("pgbouncer", "/usr/sbin/pgbouncer"),
              f"PostgreSQL 15 ({PG_BIN})": str(PG_BIN / "postgres") if (PG_BIN / "postgres").exists() else None}
    absent = [name for name, path in wanted.items() if path is None]
    if absent:
        return (f"{', '.join(absent)} not installed (apt-get install patroni etcd-server pgbouncer "
                "postgresql-15)")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(RUN_AS)
        except KeyError:
            return f"running as root without a '{RUN_AS}' user to run PostgreSQL as"
    return None




def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def _get_json(url: str, timeout: float = 1.0) -> tuple[int, Any]:
    """(status, body as JSON or None); (0, None) when nobody answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return answer.status, json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"null")
        except ValueError:
            return exc.code, None
    except (OSError, ValueError):
        return 0, None


@dataclass
class Member:
    """One of the district's servers: its Patroni (with its PostgreSQL) and its pgbouncer."""

    name: str
    workdir: Path
    pg_port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)
    bouncer_port: int = field(default_factory=free_port)
    patroni: subprocess.Popen[bytes] | None = None
    bouncer: subprocess.Popen[bytes] | None = None

    @property
    def data_dir(self) -> Path:
        return self.workdir / f"{self.name}-data"

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None


class PatroniCluster:
    """`size` members (2 or 3) on one etcd. ttl/loop_wait/retry_timeout are Patroni's (ttl >= loop_wait +
    2 * retry_timeout); a SIGKILLed primary's leader key lives up to `ttl` seconds, so that bounds a failover.
    Two members with `strict`: after the primary's loss the survivor is promoted but holds every commit (no
    standby left to confirm it) until the other is back; strict mode wants three."""

    def __init__(self, size: int = 3, *, ttl: int = 10, loop_wait: int = 1, retry_timeout: int = 4,
                 strict: bool = True, maximum_lag_on_failover: int = 1024 * 1024, fsync: bool = True,
                 scope: str = "district", callback: bool = True, base: Path | None = None) -> None:
        assert 2 <= size <= 3 and ttl >= loop_wait + 2 * retry_timeout
        self.size = size
        self.settings = {"ttl": ttl, "loop_wait": loop_wait, "retry_timeout": retry_timeout,
                         "maximum_lag_on_failover": maximum_lag_on_failover, "synchronous_mode": True,
                         "synchronous_mode_strict": strict}
        self.fsync = fsync
        self.scope = scope
        self.callback = callback  # False: without docs/district-ha/pgbouncer-role (to see why it is there)
        self.base = base
        self.dir = Path()
        self.members: list[Member] = []
        self.etcd: subprocess.Popen[bytes] | None = None
        self.etcd_port = self.etcd_peer_port = 0
        self._run_as: dict[str, Any] = {}

    # -- starting ---------------------------------------------------------------------------------

    def start(self, timeout: float = 120.0) -> None:
        """etcd, the pgbouncers and the Patroni members; returns once a primary runs with a synchronous standby
        streaming, every member runs, and the district's role and database exist."""
        self.dir = Path(tempfile.mkdtemp(prefix="campusgw-ha-", dir=self.base))
        if os.geteuid() == 0:
            user = pwd.getpwnam(RUN_AS)
            os.chown(self.dir, user.pw_uid, user.pw_gid)
            self._run_as = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
        self.members = [Member(f"pg{i + 1}", self.dir) for i in range(self.size)]
        self._start_etcd()
        self._write_callback()
        for member in self.members:
            self._start_bouncer(member)
        for member in self.members:
            self._start_patroni(member)
        wait_for(self._ready, timeout, lambda: f"the Patroni cluster: {self.describe()}")
        self._make_district_database()

    def _env(self) -> dict[str, str]:
        return {"PATH": f"{PG_BIN}:/usr/local/bin:/usr/bin:/bin", "HOME": str(self.dir), "LANG": "C.UTF-8",
                "LC_ALL": "C.UTF-8", "PGCONNECT_TIMEOUT": "3", "PGHOST": "127.0.0.1", "DATABASES": DATABASE}

    def _spawn(self, argv: list[str], log_name: str) -> subprocess.Popen[bytes]:
        log = self.dir / log_name
        out = log.open("ab")
        try:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    cwd=self.dir, env=self._env(), start_new_session=True, **self._run_as)
        finally:
            out.close()
        return proc

    def _own(self, path: Path) -> Path:
        if self._run_as:
            os.chown(path, self._run_as["user"], self._run_as["group"])
        return path

    def _write(self, name: str, text: str, mode: int = 0o600) -> Path:
        path = self.dir / name
        path.write_text(text)
        path.chmod(mode)
        return self._own(path)

    def _start_etcd(self) -> None:
        self.etcd_port, self.etcd_peer_port = free_port(), free_port()
        peer = f"http://127.0.0.1:{self.etcd_peer_port}"
        client = f"http://127.0.0.1:{self.etcd_port}"
        self._own(self.dir)
        etcd = binary("etcd")
        assert etcd
        self.etcd = self._spawn([etcd, "--name", "etcd1", "--data-dir", str(self.dir / "etcd"),
                                 "--listen-client-urls", client, "--advertise-client-urls", client,
                                 "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                                 "--initial-cluster", f"etcd1={peer}", "--initial-cluster-state", "new",
                                 "--initial-cluster-token", self.dir.name], "etcd.log")
        wait_for(lambda: _get_json(f"{client}/health")[1] == {"health": "true"}, 30, "etcd")

    def _write_callback(self) -> None:
        """Patroni's callback for each member (docs/district-ha/pgbouncer-role, copied where the postgres user
        reads it): its pgbouncer lets the district in only while it is the primary."""
        self._write("pgbouncer-role", CALLBACK.read_text(), mode=0o755)

    def _start_bouncer(self, member: Member) -> None:
        ini = self._write(f"{member.name}-pgbouncer.ini", BOUNCER_INI.format(
            database=DATABASE, pg_port=member.pg_port, port=member.bouncer_port, dir=self.dir, name=member.name))
        self._write("userlist.txt", f'"{USER}" ""\n"postgres" ""\n')
        pgbouncer = binary("pgbouncer", "/usr/sbin/pgbouncer")
        assert pgbouncer
        member.bouncer = self._spawn([pgbouncer, str(ini)], f"{member.name}-pgbouncer.out")
        wait_for(lambda: _listening(member.bouncer_port), 20, f"{member.name}'s pgbouncer")

    def patroni_config(self, member: Member) -> dict[str, Any]:
        hba = ["local all all trust", "host all all 127.0.0.1/32 trust", "host replication all 127.0.0.1/32 trust"]
        callback = f"{self.dir / 'pgbouncer-role'} {member.bouncer_port} {member.pg_port}"
        return {
            "scope": self.scope, "namespace": "/campusgw/", "name": member.name,
            "restapi": {"listen": f"127.0.0.1:{member.api_port}", "connect_address": f"127.0.0.1:{member.api_port}"},
            "etcd3": {"hosts": [f"127.0.0.1:{self.etcd_port}"]},
            "bootstrap": {
                "dcs": {**self.settings, "postgresql": {"use_pg_rewind": True, "use_slots": True, "parameters": {
                    "wal_level": "replica", "hot_standby": "on", "wal_log_hints": "on", "max_wal_senders": 10,
                    "max_replication_slots": 10, "wal_keep_size": "128MB", "max_connections": 100,
                    "synchronous_commit": "on", "fsync": "on" if self.fsync else "off",
                    # a standby retries its primary this often (5 s by default): after a failover the one not
                    # promoted must reattach before the new primary's commits return (strict mode)
                    "wal_retrieve_retry_interval": "1s"}}},
                "initdb": [{"encoding": "UTF8"}, {"locale": "C.UTF-8"}, "data-checksums"],
            },
            "postgresql": {
                "listen": f"127.0.0.1:{member.pg_port}", "connect_address": f"127.0.0.1:{member.pg_port}",
                "data_dir": str(member.data_dir), "bin_dir": str(PG_BIN),
                "pgpass": str(self.dir / f"{member.name}.pgpass"),
                "authentication": {"superuser": {"username": "postgres", "password": "postgres-test"},
                                   "replication": {"username": "replicator", "password": "replicator-test"},
                                   "rewind": {"username": "rewinder", "password": "rewinder-test"}},
                "parameters": {"unix_socket_directories": str(self.dir), "shared_buffers": "32MB"},
                "pg_hba": hba,
                "callbacks": {action: callback for action in ("on_start", "on_stop", "on_restart", "on_role_change")
                              if self.callback},
            },
            "tags": {"nofailover": False, "noloadbalance": False, "clonefrom": False, "nosync": False},
        }

    def _start_patroni(self, member: Member) -> None:
        config = self._write(f"{member.name}.yml", yaml.safe_dump(self.patroni_config(member)))
        patroni = binary("patroni")
        assert patroni
        member.patroni = self._spawn([patroni, str(config)], f"{member.name}-patroni.log")

    def _ready(self) -> bool:
        state = self.cluster()
        if not state:
            return False
        members = state.get("members", [])
        running = [m for m in members if m.get("state") in ("running", "streaming")]
        roles = {m.get("role") for m in running}
        if not (len(running) == self.size and roles & {"leader", "master", "primary"} and "sync_standby" in roles):
            return False
        if not self.callback:
            return True
        primary = self.primary()  # and the callbacks done: only the primary's pgbouncer lets the district in
        return all(self.bouncer_open(m.name) is (m.name == primary) for m in self.members)

    def _make_district_database(self) -> None:
        import psycopg

        primary = self.member(self.primary())
        with psycopg.connect(host="127.0.0.1", port=primary.pg_port, user="postgres", dbname="postgres",
                             autocommit=True, connect_timeout=5) as conn:
            conn.execute(f"CREATE ROLE {USER} LOGIN")
            conn.execute(f"CREATE DATABASE {DATABASE} OWNER {USER}")

    # -- what runs where ---------------------------------------------------------------------------

    def member(self, name: str | None) -> Member:
        found = next((m for m in self.members if m.name == name), None)
        if found is None:
            raise KeyError(f"no member {name!r}")
        return found

    def cluster(self) -> dict[str, Any] | None:
        """Patroni's /cluster (every member, its role, state, timeline and lag), from the first that answers."""
        for member in self.members:
            if member.patroni is None:
                continue
            status, body = _get_json(f"{member.api}/cluster")
            if status == 200 and isinstance(body, dict):
                return body
        return None

    def describe(self) -> str:
        state = self.cluster()
        if state is None:
            return "no member answers"
        return ", ".join(f"{m.get('name')} {m.get('role')} {m.get('state')} tl {m.get('timeline')} "
                         f"lag {m.get('lag')}" for m in state.get("members", []))

    def primary(self) -> str | None:
        """The member that leads (the leader key in etcd) and runs, by Patroni's /cluster; None if none."""
        state = self.cluster()
        for m in (state or {}).get("members", []):
            if m.get("role") in ("leader", "master", "primary") and m.get("state") == "running":
                return str(m["name"])
        return None

    def is_primary(self, name: str) -> bool:
        """Its Patroni says it is the running primary (GET /primary answers 200)."""
        member = self.member(name)
        return member.patroni is not None and _get_json(f"{member.api}/primary")[0] == 200

    def bouncer_open(self, name: str) -> bool | None:
        """Whether a member's pgbouncer lets the district in (its `district` database not disabled), from its
        admin console; None if it does not answer."""
        member = self.member(name)
        if member.bouncer is None:
            return None
        shown = subprocess.run([str(PG_BIN / "psql"), "-X", "-A", "-q", "-F", "|", "-h", "127.0.0.1",
                                "-p", str(member.bouncer_port), "-U", "postgres", "-d", "pgbouncer",
                                "-c", "SHOW DATABASES"], capture_output=True, text=True, timeout=10, env=self._env())
        lines = shown.stdout.splitlines()
        if shown.returncode != 0 or not lines:
            return None
        header = lines[0].split("|")
        for line in lines[1:]:
            row = dict(zip(header, line.split("|"), strict=False))
            if row.get("name") == DATABASE:
                return row.get("disabled") == "0"
        return None

    def caught_up(self, name: str) -> bool:
        """A member streams as a standby of the current primary, on its timeline, with no lag."""
        state = self.cluster() or {}
        members = {str(m.get("name")): m for m in state.get("members", [])}
        leader = next((m for m in members.values() if m.get("role") in ("leader", "master", "primary")), None)
        me = members.get(name)
        return (leader is not None and me is not None and me.get("role") in ("replica", "sync_standby")
                and me.get("state") in ("running", "streaming") and me.get("lag") == 0
                and me.get("timeline") == leader.get("timeline"))

    def sync_standby(self) -> str | None:
        state = self.cluster()
        return next((str(m["name"]) for m in (state or {}).get("members", []) if m.get("role") == "sync_standby"),
                    None)

    def url(self, order: list[str] | None = None, connect_timeout: int = 3) -> str:
        """The district's database.url: every member's pgbouncer, in `order` (member names; default all in
        turn), for libpq to try one after another, keeping the first that accepts writes."""
        names = order or [m.name for m in self.members]
        hosts = "&".join(f"host=127.0.0.1:{self.member(n).bouncer_port}" for n in names)
        return (f"postgresql://{USER}@/{DATABASE}?{hosts}&target_session_attrs=read-write"
                f"&connect_timeout={connect_timeout}")

    def direct_url(self, name: str) -> str:
        """A member's PostgreSQL itself, bypassing its pgbouncer (to check what it holds)."""
        return f"postgresql://postgres@127.0.0.1:{self.member(name).pg_port}/{DATABASE}"

    # -- failures ----------------------------------------------------------------------------------

    def kill_primary(self, with_bouncer: bool = True) -> str:
        """SIGKILL the primary's Patroni, PostgreSQL (the postmaster and its backends) and, unless told
        otherwise, its pgbouncer: the server gone at once. Returns the member's name."""
        name = self.primary()
        if name is None:
            raise AssertionError(f"no primary to kill: {self.describe()}")
        self.kill(name, with_bouncer)
        return name

    def kill(self, name: str, with_bouncer: bool = True) -> None:
        member = self.member(name)
        postmaster = member.postmaster_pid()
        groups = []
        if member.patroni is not None:
            groups.append(member.patroni.pid)
        if postmaster is not None:
            with contextlib.suppress(ProcessLookupError):
                groups.append(os.getpgid(postmaster))
        if with_bouncer and member.bouncer is not None:
            groups.append(member.bouncer.pid)
        mine = os.getpgid(0)
        for group in groups:
            if group != mine:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(group, signal.SIGKILL)
        if member.patroni is not None:
            member.patroni.wait(10)
            member.patroni = None
        if with_bouncer and member.bouncer is not None:
            member.bouncer.wait(10)
            member.bouncer = None
        if postmaster is not None:
            wait_for(lambda: not Path(f"/proc/{postmaster}").exists(), 10, f"{name}'s postmaster gone")

    def wait_for_new_primary(self, old: str, timeout: float = 60.0) -> str:
        """A member other than `old` leading, running and answering as primary; returns its name."""
        def new() -> str | None:
            name = self.primary()
            return name if name is not None and name != old and self.is_primary(name) else None

        found: str = wait_for(new, timeout, lambda: f"a new primary: {self.describe()}")
        return found

    def restart(self, name: str) -> None:
        """The server back: its pgbouncer and Patroni again (Patroni rejoins it as a standby, rewinding it if
        it must)."""
        member = self.member(name)
        if member.bouncer is None:
            self._start_bouncer(member)
        if member.patroni is None:
            self._start_patroni(member)

    # -- stopping ----------------------------------------------------------------------------------

    def processes(self) -> list[tuple[int, str]]:
        """Every process whose command line names this cluster's directory (postgres -D, patroni, pgbouncer,
        etcd --data-dir): what stop() must leave none of."""
        if not self.dir.name:
            return []
        needle = str(self.dir)
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if needle in cmdline:
                found.append((int(entry.name), cmdline.strip()))
        return found

    def stop(self, keep: Path | None = None) -> None:
        """Everything SIGKILLed (the data goes with the directory), then the directory removed; `keep`: copy the
        logs there first."""
        for member in self.members:
            if member.patroni is not None or member.postmaster_pid() is not None:
                with contextlib.suppress(Exception):
                    self.kill(member.name)
            if member.bouncer is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(member.bouncer.pid, signal.SIGKILL)
                member.bouncer.wait(10)
                member.bouncer = None
        if self.etcd is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.etcd.pid, signal.SIGKILL)
            self.etcd.wait(10)
            self.etcd = None
        for pid, _ in self.processes():  # anything else (a callback's psql, a pg_basebackup)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(AssertionError):
            wait_for(lambda: not self.processes(), 10, "every process of the cluster gone")
        if not self.dir.name:
            return
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            for log in [*self.dir.glob("*.log"), *self.dir.glob("*.out")]:
                with contextlib.suppress(OSError):
                    shutil.copy(log, keep / log.name)
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.dir / name
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def district_engine(url: str) -> Engine:
    """As `campusgw district worker` makes it (gateway/district/cli.py): the config's url, pool_pre_ping."""
    return create_engine(DistrictDatabase(url=url).resolved(), pool_pre_ping=True)


@dataclass
class Writer:
    """Batches of events written one after another as a district worker writes them (store.write in one
    transaction, on the engine the worker makes); a batch counts as acknowledged once its commit returned, and
    one whose write failed is written again (as a nak brings it again). With `rate` (batches a second) each
    batch has its time in a schedule and its latency counts from then, so batches due while the database was
    away count their wait; without, the next follows `pause_s` after a commit and counts from its first try."""

    url: str
    batch: int = 5
    pause_s: float = 0.02
    rate: float | None = None
    site: str = "probe"
    acknowledged: set[str] = field(default_factory=set)
    commits: list[tuple[float, float, float]] = field(default_factory=list)  # (due, committed at, latency s)
    failures: list[float] = field(default_factory=list)  # when an attempt failed
    errors: dict[str, int] = field(default_factory=dict)  # the failures' first line, counted
    stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        self.engine = district_engine(self.url)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def rows(self) -> list[dict[str, Any]]:
        now = datetime.now(UTC)
        return [{"id": str(uuid.uuid4()), "time": now, "site": self.site, "kind": "alarm_input", "device": "probe",
                 "type": "campus.alarm_input.triggered", "class": "alarm", "test": False, "historical": False,
                 "received_at": now, "data": {"n": n}} for n in range(self.batch)]

    def _run(self) -> None:
        first = time.monotonic()
        n = 0
        while not self.stop.is_set():
            due = first + n / self.rate if self.rate else time.monotonic()
            if due > time.monotonic() and self.stop.wait(due - time.monotonic()):
                return
            rows = self.rows()
            while not self.stop.is_set():
                try:
                    with self.engine.begin() as conn:
                        store.write(conn, rows, [], datetime.now(UTC))
                except Exception as exc:
                    self.failures.append(time.monotonic())
                    reason = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
                    self.errors[reason] = self.errors.get(reason, 0) + 1
                    self.stop.wait(0.05)
                    continue
                done = time.monotonic()
                self.acknowledged.update(r["id"] for r in rows)
                self.commits.append((due, done, done - due))
                break
            n += 1
            if not self.rate:
                self.stop.wait(self.pause_s)

    def first_commit_after(self, moment: float) -> float | None:
        return next((at for _, at, _ in self.commits if at > moment), None)

    def recovered_after(self, moment: float) -> float | None:
        """The first commit after the first failed attempt since `moment` (a commit already on its way at
        `moment` may still return): when writes came back after a failure then."""
        failed = next((at for at in self.failures if at > moment), None)
        return self.first_commit_after(failed if failed is not None else moment)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(60)
        self.engine.dispose()


# pgbouncer in front of one member's PostgreSQL. Session pooling: a district worker keeps its connection for its
# batches. server_login_retry 1 s (15 s by default): after its PostgreSQL restarts, clients are not refused for
# 15 s. auth trust on loopback here; a real district uses scram-sha-256 (docs/district-ha/pgbouncer.ini).
BOUNCER_INI = """\
[databases]
{database} = host=127.0.0.1 port={pg_port} dbname={database}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {dir}/userlist.txt
admin_users = postgres
pool_mode = session
max_client_conn = 200
default_pool_size = 40
server_login_retry = 1
server_connect_timeout = 3
logfile = {dir}/{name}-pgbouncer.log
pidfile = {dir}/{name}-pgbouncer.pid
"""
