"""PostgreSQL authentication: with `--pg-user NAME:PASSWORD`, clients log in with SCRAM-SHA-256;
a wrong password or an unknown user is refused, and the server keeps serving."""

import os
import subprocess

import pytest


def psql(broker, user, password, sql):
    env = dict(os.environ, PGPASSWORD=password, PGCONNECT_TIMEOUT="10")
    return subprocess.run(
        ["psql", "-h", "127.0.0.1", "-p", str(broker.pg_port), "-U", user, "-d", "lakestream",
         "-At", "-c", sql],
        capture_output=True, text=True, timeout=30, env=env)


@pytest.mark.broker_args("--pg-user", "alice:s3cret", "--pg-user", "bob:hunter2")
def test_scram_lets_in_configured_users_only(broker):
    ok = psql(broker, "alice", "s3cret", "SELECT 40 + 2")
    assert ok.returncode == 0 and ok.stdout.strip() == "42", ok.stderr
    assert psql(broker, "bob", "hunter2", "SELECT 1").stdout.strip() == "1"
    for user, password in [("alice", "wrong"), ("mallory", "s3cret")]:
        refused = psql(broker, user, password, "SELECT 1")
        assert refused.returncode != 0, (user, refused.stdout)
        assert "FATAL" in refused.stderr, refused.stderr
    # Still serving after the refusals.
    assert psql(broker, "alice", "s3cret", "SELECT 7").stdout.strip() == "7"


def test_without_users_any_name_is_let_in(broker):
    ok = psql(broker, "whoever", "", "SELECT 'open'")
    assert ok.returncode == 0 and ok.stdout.strip() == "open", ok.stderr
