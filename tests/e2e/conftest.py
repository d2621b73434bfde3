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

On failure the broker's log (stdout+stderr of every start) is attached to the report.
If a broker dies on its own (not through kill9/stop), the test errors at teardown.
"""

from __future__ import annotations

import os
import pathlib
import signal
import socket
import subprocess
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


class Broker:
    def __init__(self, workdir: pathlib.Path, extra_args=(), port: int | None = None):
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "broker.log"
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.bootstrap = f"{self.host}:{self.port}"
        self.extra_args = list(extra_args)
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.unexpected_exit: str | None = None

    # -- lifecycle -------------------------------------------------------
    def command(self) -> list[str]:
        return [lakestream_bin(), "serve", "--data-dir", str(self.data_dir),
                "--kafka-addr", self.bootstrap, *self.extra_args]

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
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            rc = self.proc.poll()
            if rc is not None:
                self.proc = None  # reported here; not an "unexpected exit" at teardown
                raise BrokerError(f"broker exited with code {rc} during startup\n{self.log_tail()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return self
            except OSError:
                pass
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

    def make(*extra_args, start: bool = True) -> Broker:
        b = Broker(tmp_path / f"broker{len(brokers)}", extra_args)
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


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for i, b in enumerate(getattr(item, "_lakestream_brokers", [])):
            rep.sections.append((f"broker {i} log ({b.log_path})", "\n".join(b.log_text().splitlines()[-200:])))
