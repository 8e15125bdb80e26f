"""Real servers for the tests: processes of our own on free loopback ports, stopped by PID."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def freeze(pid: int) -> None:
    """SIGSTOP ``pid`` and wait until every thread of it is stopped (signal delivery is
    asynchronous: a busy process may still answer a request or two meanwhile)."""
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + 5
    task_dir = f"/proc/{pid}/task"
    while time.monotonic() < deadline:
        states = []
        for tid in os.listdir(task_dir):
            with open(f"{task_dir}/{tid}/stat") as f:
                states.append(f.read().rsplit(")", 1)[1].split()[0])
        if all(st in ("T", "t") for st in states):
            return
        time.sleep(0.001)
    raise RuntimeError(f"process {pid} did not stop")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _ServerProcess:
    """Process control shared by the servers: by PID, never by name."""

    proc: subprocess.Popen[bytes] | None

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def freeze(self) -> None:
        assert self.proc is not None
        freeze(self.proc.pid)

    def thaw(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)  # in case a test left it stopped
            os.kill(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=10)


class RedisServer(_ServerProcess):
    """A redis-server of our own on a free loopback port, stopped by PID."""

    def __init__(self, directory: Path, *args: str) -> None:
        assert os.path.exists(REDIS_SERVER), \
            f"{REDIS_SERVER} is required (CI installs it); these tests do not skip"
        self.port = free_port()
        self.dir = directory
        self.args = args
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--bind", "127.0.0.1", "--port", str(self.port), "--dir",
             str(self.dir), *self.args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url, socket_timeout=2)
        deadline = time.monotonic() + 10
        try:
            while True:
                try:
                    client.ping()
                    return
                except (redis.AuthenticationError, redis.ResponseError):
                    return  # it answers: it wants a password
                except redis.ConnectionError:
                    if time.monotonic() > deadline or self.proc.poll() is not None:
                        raise
                    time.sleep(0.02)
        finally:
            client.close()



MEMCACHED = shutil.which("memcached") or "/usr/bin/memcached"


class MemcachedServer(_ServerProcess):
    """A memcached of our own on a free loopback port, stopped by PID."""

    def __init__(self, *args: str) -> None:
        assert os.path.exists(MEMCACHED), \
            f"{MEMCACHED} is required (CI installs the Debian package); these tests do not skip"
        self.port = free_port()
        self.args = args
        self.url = f"memcached://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        """Start (or restart, empty) on the same port; wait until it answers."""
        self.proc = subprocess.Popen(
            [MEMCACHED, "-l", "127.0.0.1", "-p", str(self.port), "-U", "0", "-m", "64",
             "-u", "nobody" if os.geteuid() == 0 else os.environ.get("USER", "root"),
             *self.args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"version\r\n")
                    if s.recv(100).startswith(b"VERSION"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"memcached did not start on port {self.port}")
            time.sleep(0.02)



def _postgres_binary(name: str) -> str:
    """``name`` on PATH, else in Debian's /usr/lib/postgresql/<version>/bin (newest)."""
    found = shutil.which(name)
    if found:
        return found
    found_in = [p for p in glob.glob(f"/usr/lib/postgresql/*/bin/{name}")
                if Path(p).parts[4].isdigit()]
    found_in.sort(key=lambda p: int(Path(p).parts[4]))
    return found_in[-1] if found_in else f"/usr/local/bin/{name}"


INITDB = _postgres_binary("initdb")
POSTGRES = _postgres_binary("postgres")


class PostgresServer:
    """A PostgreSQL cluster of our own: ``initdb`` in a fresh directory under /tmp, then
    ``postgres`` on a free loopback port (trust auth), stopped by PID.

    PostgreSQL refuses to run as root: as root, initdb and the server run as the
    ``postgres`` user (set by ``subprocess``, like ``runuser -u postgres``, so the PID
    we hold is the postmaster's), in a directory chowned to it. Never the machine's
    shared server. Connect with :attr:`url` (SQLAlchemy + psycopg) or :attr:`conninfo`.
    """

    def __init__(self) -> None:
        for binary in (INITDB, POSTGRES):
            assert os.path.exists(binary), \
                f"{binary} is required (CI installs PostgreSQL); these tests do not skip"
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="shardkit-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        self.conninfo = f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"
        self.proc: subprocess.Popen[bytes] | None = None
        self._as_postgres: dict[str, Any] = {}
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self._as_postgres = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
        try:
            done = subprocess.run(
                [INITDB, "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                 "--locale=C", "--no-sync"],
                cwd=self.dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120,
                check=False, **self._as_postgres,
            )
            if done.returncode != 0:
                raise RuntimeError(f"initdb failed:\n{done.stdout.decode(errors='replace')}")
            self.start()
        except BaseException:
            self.close()
            raise

    def start(self) -> None:
        """Start (or restart, after :meth:`kill`, with crash recovery) on the same port;
        wait until it accepts connections."""
        import psycopg

        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [POSTGRES, "-D", str(self.data), "-p", str(self.port),
                 "-c", "listen_addresses=127.0.0.1",
                 "-c", f"unix_socket_directories={self.dir}",
                 "-c", "fsync=off",  # we never crash the OS; killed processes lose nothing
                 "-c", "max_connections=40", "-c", "shared_buffers=16MB"],
                cwd=self.dir, stdout=log, stderr=subprocess.STDOUT, **self._as_postgres,
            )
        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg.connect(self.conninfo, connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(
                        f"postgres did not start on port {self.port}:\n{self.log.read_text()}"
                    ) from None
                time.sleep(0.05)

    def kill(self) -> None:
        """Immediate shutdown by PID (SIGQUIT, what ``pg_ctl stop -m immediate`` sends):
        the postmaster and its backends exit at once, without a checkpoint."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGQUIT)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        """Fast shutdown by PID (SIGINT): clients are disconnected, data is checkpointed."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)

    def close(self) -> None:
        """Stop the server and remove its directory."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"


class RedisClusterServers:
    """A Redis Cluster of our own: ``primaries`` * (1 + ``replicas``) redis-server
    processes (each a :class:`RedisServer`, in its own directory, cluster bus on a second
    free port) joined with ``redis-cli --cluster create``; stopped by PID.

    The nodes run with a 1 s node timeout and a replica validity factor of 0, so a
    killed primary's replica takes over within a few seconds.
    """

    def __init__(self, directory: Path, primaries: int = 3, replicas: int = 1) -> None:
        assert os.path.exists(REDIS_CLI), \
            f"{REDIS_CLI} is required (CI installs it); these tests do not skip"
        self.nodes: list[RedisServer] = []
        try:
            for i in range(primaries * (1 + replicas)):
                node_dir = directory / f"node{i}"
                node_dir.mkdir(parents=True, exist_ok=True)
                self.nodes.append(RedisServer(
                    node_dir, "--save", "", "--appendonly", "no",
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", str(node_dir / "nodes.conf"),
                    "--cluster-port", str(free_port()),
                    "--cluster-node-timeout", "1000",
                    "--cluster-replica-validity-factor", "0",
                    # replicas sync at once, and show in CLUSTER SLOTS within a second
                    "--repl-diskless-sync-delay", "0", "--repl-ping-replica-period", "1"))
            done = subprocess.run(
                [REDIS_CLI, "--cluster", "create",
                 *(f"127.0.0.1:{n.port}" for n in self.nodes),
                 "--cluster-replicas", str(replicas), "--cluster-yes"],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60, check=False)
            if done.returncode != 0:
                raise RuntimeError(
                    f"redis-cli --cluster create failed:\n{done.stdout.decode(errors='replace')}")
            self.wait_ok(self.nodes, replicas=replicas)
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        """``redis+cluster://`` with every node as a startup node."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def client(self, node: RedisServer) -> redis.Redis:
        """A plain (non-cluster) redis-py client of one node: close it after use."""
        return redis.Redis(host="127.0.0.1", port=node.port, socket_timeout=2)

    def node_at(self, port: int) -> RedisServer:
        return next(n for n in self.nodes if n.port == port)

    def primaries(self) -> list[RedisServer]:
        """The nodes serving slots now, as the live nodes see it."""
        return [n for n in self.nodes if n.proc is not None and n.proc.poll() is None
                and self.role(n) == "master"]

    def role(self, node: RedisServer) -> str:
        c = self.client(node)
        try:
            return str(c.info("replication")["role"])
        finally:
            c.close()

    def replica_of(self, primary: RedisServer) -> RedisServer:
        """The (first) replica of ``primary``, as the replicas report it."""
        for node in self.nodes:
            if node is primary or node.proc is None or node.proc.poll() is not None:
                continue
            c = self.client(node)
            try:
                info = c.info("replication")
            finally:
                c.close()
            if info["role"] == "slave" and int(info["master_port"]) == primary.port:
                return node
        raise LookupError(f"no replica of port {primary.port}")

    def wait_ok(self, nodes: list[RedisServer], timeout: float = 20.0,
                replicas: int | None = 1) -> None:
        """Wait until on every node of ``nodes``: ``cluster_state:ok``, each slot range
        served by a primary and ``replicas`` replicas (``CLUSTER SLOTS``; None: any
        number), and, on a replica, the link to its primary up."""
        deadline = time.monotonic() + timeout
        pending = list(nodes)
        while pending:
            node = pending[0]
            c = self.client(node)
            try:
                ok = c.execute_command("CLUSTER INFO").get("cluster_state") == "ok"
                ok = ok and (replicas is None or all(
                    len(r) == 3 + replicas for r in c.execute_command("CLUSTER SLOTS")))
                repl = c.info("replication")
                ok = ok and (repl["role"] == "master" or repl.get("master_link_status") == "up")
            except redis.RedisError:
                ok = False
            finally:
                c.close()
            if ok:
                pending.pop(0)
                continue
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cluster is not ok on port {node.port} after {timeout} s")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop every node by PID (SIGTERM; SIGKILL if that fails)."""
        for node in self.nodes:
            try:
                node.stop()
            except (OSError, subprocess.TimeoutExpired):
                node.kill()
