//! The people-facing commands end to end: starts `lakestream serve` on a free port in a
//! scratch data directory and drives `topics`, `produce`, `consume` and `groups` through the
//! binary.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_lakestream");

/// A running `lakestream serve`, killed and its data directory removed on drop.
struct Broker {
    child: Child,
    data_dir: PathBuf,
    address: String,
}

impl Broker {
    fn start() -> Broker {
        Broker::start_with(&[])
    }

    /// Starts the broker with extra `serve` flags.
    fn start_with(flags: &[&str]) -> Broker {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let address = format!("127.0.0.1:{port}");
        let unique = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let data_dir = std::env::temp_dir().join(format!(
            "lakestream-cli-test-{}-{unique}",
            std::process::id()
        ));
        std::fs::create_dir_all(&data_dir).unwrap();
        let child = Command::new(BINARY)
            .args(["serve", "--data-dir"])
            .arg(&data_dir)
            .args(["--kafka-addr", &address])
            .args(["--http-addr", "127.0.0.1:0", "--pg-addr", "127.0.0.1:0"])
            .args(flags)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("lakestream serve starts");
        let mut broker = Broker {
            child,
            data_dir,
            address,
        };
        broker.wait_until_listening();
        broker
    }

    fn wait_until_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("lakestream serve exited early with {status}");
            }
            if TcpStream::connect(&self.address).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "lakestream serve did not listen on {} within 30s",
            self.address
        );
    }

    /// Runs `lakestream ARGS --bootstrap ADDRESS` with `stdin`.
    fn run(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = Command::new(BINARY)
            .args(args)
            .args(["--bootstrap", &self.address])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    /// Runs a command that must succeed and returns its stdout and stderr.
    fn ok(&self, args: &[&str], stdin: &str) -> (String, String) {
        let output = self.run(args, stdin);
        let stdout = String::from_utf8(output.stdout).unwrap();
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(
            output.status.success(),
            "lakestream {args:?} failed with {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
            output.status
        );
        (stdout, stderr)
    }

    /// Runs a command that must fail and returns its stderr.
    fn fails(&self, args: &[&str]) -> String {
        let output = self.run(args, "");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(!output.status.success(), "lakestream {args:?} succeeded");
        stderr
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// The fields of a default-format consume line, without the timestamp (it varies).
fn fields(line: &str) -> Vec<&str> {
    let mut fields: Vec<&str> = line.split('\t').collect();
    assert_eq!(fields.len(), 6, "{line:?}");
    let timestamp = fields.remove(2);
    assert!(
        timestamp
            .parse::<i64>()
            .is_ok_and(|t| t > 1_600_000_000_000),
        "{line:?}"
    );
    fields
}

#[test]
fn topics_produce_consume() {
    let broker = Broker::start();

    // topics create / list / describe
    let (out, _) = broker.ok(
        &[
            "topics",
            "create",
            "orders",
            "--partitions",
            "3",
            "--config",
            "retention.ms=3600000",
        ],
        "",
    );
    assert_eq!(out, "created topic orders with 3 partitions\n");
    let stderr = broker.fails(&["topics", "create", "orders", "--partitions", "3"]);
    assert!(stderr.contains("TOPIC_ALREADY_EXISTS"), "{stderr}");
    let (out, _) = broker.ok(&["topics", "list"], "");
    assert!(out.lines().any(|l| l == "orders\t3"), "{out}");

    let (out, _) = broker.ok(&["topics", "describe", "orders"], "");
    assert!(
        out.starts_with("Topic: orders  Partitions: 3  ReplicationFactor: 1\n"),
        "{out}"
    );
    for partition in 0..3 {
        let row = format!("{partition}          0       0         0               0");
        assert!(out.lines().any(|l| l == row), "no row {row:?} in\n{out}");
    }
    let retention = |describe: &str| {
        describe
            .lines()
            .find(|l| l.starts_with("retention.ms "))
            .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
    };
    assert_eq!(retention(&out).as_deref(), Some("3600000 topic"), "{out}");

    // topics alter: set, then reset to the default
    broker.ok(
        &["topics", "alter", "orders", "--config", "retention.ms=1000"],
        "",
    );
    let (out, _) = broker.ok(&["topics", "describe", "orders"], "");
    assert_eq!(retention(&out).as_deref(), Some("1000 topic"), "{out}");
    broker.ok(
        &[
            "topics",
            "alter",
            "orders",
            "--delete-config",
            "retention.ms",
        ],
        "",
    );
    let (out, _) = broker.ok(&["topics", "describe", "orders"], "");
    assert_ne!(retention(&out).as_deref(), Some("1000 topic"), "{out}");

    // produce: stdin lines with keys, then one record with flags
    let (_, err) = broker.ok(
        &[
            "produce",
            "orders",
            "--partition",
            "0",
            "--key-separator",
            ":",
            "--header",
            "source=test",
        ],
        "k1:v1\nk2:v2\n\nk3:v3:with:colons\n",
    );
    assert_eq!(
        err.trim_end(),
        "produced 3 records to orders: partition 0 offsets 0..=2"
    );
    let (_, err) = broker.ok(
        &[
            "produce",
            "orders",
            "--partition",
            "2",
            "--value",
            "hello",
            "--compression",
            "gzip",
            "--acks",
            "1",
        ],
        "",
    );
    assert_eq!(
        err.trim_end(),
        "produced 1 record to orders: partition 2 offset 0"
    );
    let (_, err) = broker.ok(&["produce", "orders", "--compression", "zstd"], "a\nb\nc\n");
    assert_eq!(
        err.trim_end(),
        "produced 3 records to orders: partition 0 offset 3, partition 1 offset 0, \
         partition 2 offset 1"
    );

    // describe reflects the high watermarks
    let (out, _) = broker.ok(&["topics", "describe", "orders"], "");
    assert!(
        out.lines()
            .any(|l| l == "0          0       0         0               4"),
        "{out}"
    );

    // consume --exit: everything, in offset order per partition
    let (out, _) = broker.ok(&["consume", "orders", "--exit"], "");
    let mut lines: Vec<Vec<&str>> = out.lines().map(fields).collect();
    lines.sort_by_key(|f| (f[0].to_owned(), f[1].parse::<i64>().unwrap()));
    assert_eq!(
        lines,
        [
            ["0", "0", "k1", "v1", "source=test"],
            ["0", "1", "k2", "v2", "source=test"],
            ["0", "2", "k3", "v3:with:colons", "source=test"],
            ["0", "3", "", "a", ""],
            ["1", "0", "", "b", ""],
            ["2", "0", "", "hello", ""],
            ["2", "1", "", "c", ""],
        ]
    );

    // consume: one partition, from an offset, a custom format, a count
    let (out, _) = broker.ok(
        &[
            "consume",
            "orders",
            "--partition",
            "0",
            "--from",
            "1",
            "--exit",
            "--format",
            r"%k=%s@%o\n",
        ],
        "",
    );
    assert_eq!(out, "k2=v2@1\nk3=v3:with:colons@2\n=a@3\n");
    let (out, _) = broker.ok(
        &["consume", "orders", "--partition", "0", "--count", "2"],
        "",
    );
    assert_eq!(out.lines().count(), 2, "{out}");
    let (out, _) = broker.ok(&["consume", "orders", "--from", "latest", "--exit"], "");
    assert_eq!(out, "");
    let (out, _) = broker.ok(
        &[
            "consume",
            "orders",
            "--from",
            "@0",
            "--exit",
            "--partition",
            "1",
        ],
        "",
    );
    assert_eq!(out.lines().count(), 1, "{out}");

    // add partitions, delete
    broker.ok(&["topics", "add-partitions", "orders", "--total", "4"], "");
    let (out, _) = broker.ok(&["topics", "list"], "");
    assert!(out.lines().any(|l| l == "orders\t4"), "{out}");
    let (out, _) = broker.ok(&["topics", "delete", "orders"], "");
    assert_eq!(out, "deleted topic orders\n");
    let (out, _) = broker.ok(&["topics", "list"], "");
    assert!(!out.contains("orders"), "{out}");

    // errors name the Kafka error and give a hint
    let stderr = broker.fails(&["topics", "describe", "orders"]);
    assert!(stderr.contains("UNKNOWN_TOPIC_OR_PARTITION"), "{stderr}");
    assert!(stderr.contains("hint: "), "{stderr}");
    let stderr = broker.fails(&["produce", "orders", "--value", "x"]);
    assert!(stderr.contains("UNKNOWN_TOPIC_OR_PARTITION"), "{stderr}");
}

#[test]
fn an_unreachable_broker_is_a_clear_error() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let output = Command::new(BINARY)
        .args(["topics", "list"])
        .env("LAKESTREAM_BOOTSTRAP", format!("127.0.0.1:{port}"))
        .output()
        .unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "lakestream: could not connect to the broker at 127.0.0.1:{port}"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("hint: is `lakestream serve` running there?"),
        "{stderr}"
    );
}

/// `serve` given an address another program holds exits with an error naming the flag, for each
/// of its three listeners. (A taken PostgreSQL address used to panic: the SQL engine's runtime
/// was dropped inside `serve`'s async code.)
#[test]
fn a_taken_listen_address_is_a_clear_start_up_error() {
    let holder = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = holder.local_addr().unwrap().to_string();
    let free = || {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        format!("127.0.0.1:{port}")
    };
    for flag in ["--kafka-addr", "--http-addr", "--pg-addr"] {
        let data_dir = std::env::temp_dir().join(format!(
            "lakestream-cli-taken-{}-{}",
            std::process::id(),
            &flag[2..]
        ));
        let mut addresses = vec![
            ("--kafka-addr", free()),
            ("--http-addr", free()),
            ("--pg-addr", free()),
        ];
        for (name, address) in &mut addresses {
            if *name == flag {
                *address = taken.clone();
            }
        }
        let mut command = Command::new(BINARY);
        command.args(["serve", "--data-dir"]).arg(&data_dir);
        for (name, address) in &addresses {
            command.args([name, address.as_str()]);
        }
        let output = command.stdin(Stdio::null()).output().unwrap();
        let _ = std::fs::remove_dir_all(&data_dir);
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(output.status.code(), Some(1), "{flag}: {stderr}");
        assert!(
            stderr.contains(&format!("cannot listen on {taken} ({flag})")),
            "{flag}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{flag}: {stderr}");
    }
}

/// The rows of a table printed by a `groups` command, split at whitespace, without the header.
fn table_rows(out: &str) -> Vec<Vec<String>> {
    out.lines()
        .skip_while(|l| !l.starts_with("TOPIC") && !l.starts_with("GROUP"))
        .skip(1)
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect()
}

/// `(partition, new offset)` from a `groups reset-offsets` table for group `app`, topic `events`.
fn new_offsets(out: &str) -> Vec<(i32, i64)> {
    table_rows(out)
        .iter()
        .map(|row| {
            assert_eq!(row.len(), 4, "{out}");
            assert_eq!(
                (row[0].as_str(), row[1].as_str()),
                ("app", "events"),
                "{out}"
            );
            (row[2].parse().unwrap(), row[3].parse().unwrap())
        })
        .collect()
}

/// `[partition, current, end, lag, consumer, host, client]` rows of `groups describe app`.
fn described(out: &str) -> Vec<Vec<String>> {
    table_rows(out)
        .into_iter()
        .map(|mut row| {
            assert_eq!(row.len(), 8, "{out}");
            assert_eq!(row.remove(0), "events", "{out}");
            row
        })
        .collect()
}

#[test]
fn consumer_groups() {
    let broker = Broker::start_with(&["--group-initial-rebalance-delay-ms", "0"]);
    broker.ok(&["topics", "create", "events", "--partitions", "3"], "");

    // Partition p holds 5 - 2p records (5, 3, 1), the i-th stamped T0 + i seconds.
    const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut client = runtime.block_on(async {
        let mut client = client::Client::connect(&broker.address).await.unwrap();
        for (partition, count) in [(0, 5), (1, 3), (2, 1)] {
            let records: Vec<client::ProduceRecord> = (0..count)
                .map(|i| client::ProduceRecord::new(format!("v{i}")).with_timestamp(T0 + i * 1000))
                .collect();
            client
                .produce(
                    "events",
                    partition,
                    client::Acks::All,
                    client::Compression::None,
                    &records,
                )
                .await
                .unwrap();
        }
        client
    });
    let reset = |flags: &[&str]| {
        let mut args = vec!["groups", "reset-offsets", "app", "--topic", "events"];
        args.extend_from_slice(flags);
        new_offsets(&broker.ok(&args, "").0)
    };

    // A standalone commit creates the group.
    assert_eq!(reset(&["--to-offset", "1"]), [(0, 1), (1, 1), (2, 1)]);
    assert_eq!(reset(&["--partition", "0", "--to-offset", "3"]), [(0, 3)]);
    let (out, _) = broker.ok(&["groups", "describe", "app"], "");
    assert!(
        out.starts_with("Group: app  State: Empty  Protocol: consumer  Members: 0\n\n"),
        "{out}"
    );
    // lag = log end - committed, exactly
    assert_eq!(
        described(&out),
        [
            ["0", "3", "5", "2", "-", "-", "-"],
            ["1", "1", "3", "2", "-", "-", "-"],
            ["2", "1", "1", "0", "-", "-", "-"],
        ]
    );
    let (out, _) = broker.ok(&["groups", "list"], "");
    assert!(
        table_rows(&out).contains(&vec!["app".into(), "Empty".into(), "consumer".into()]),
        "{out}"
    );

    // --dry-run commits nothing.
    assert_eq!(
        reset(&["--to-earliest", "--dry-run"]),
        [(0, 0), (1, 0), (2, 0)]
    );
    let (out, _) = broker.ok(&["groups", "describe", "app"], "");
    assert_eq!(described(&out)[0][..4], ["0", "3", "5", "2"], "{out}");

    assert_eq!(reset(&["--to-earliest"]), [(0, 0), (1, 0), (2, 0)]);
    let (out, _) = broker.ok(&["groups", "describe", "app"], "");
    let lags: Vec<String> = described(&out).iter().map(|r| r[3].clone()).collect();
    assert_eq!(lags, ["5", "3", "1"], "{out}");
    assert_eq!(reset(&["--to-latest"]), [(0, 5), (1, 3), (2, 1)]);
    // The first record at or after the time; the end where there is none.
    assert_eq!(
        reset(&["--to-datetime", "2026-01-01T00:00:02Z"]),
        [(0, 2), (1, 2), (2, 1)]
    );
    assert_eq!(
        reset(&["--to-datetime", "2026-01-01T01:00:01+01:00"]),
        [(0, 1), (1, 1), (2, 1)]
    );
    assert_eq!(
        reset(&["--to-datetime", &(T0 + 4000).to_string()]),
        [(0, 4), (1, 3), (2, 1)]
    );
    assert_eq!(
        reset(&["--to-datetime", "2025-12-31T00:00:00Z"]),
        [(0, 0), (1, 0), (2, 0)]
    );
    // An offset past the end is clamped to it.
    let (out, err) = broker.ok(
        &[
            "groups",
            "reset-offsets",
            "app",
            "--topic",
            "events",
            "-p",
            "1",
            "--to-offset",
            "99",
        ],
        "",
    );
    assert_eq!(new_offsets(&out), [(1, 3)]);
    assert!(err.contains("warning: offset 99 is outside"), "{err}");
    let stderr = broker.fails(&[
        "groups",
        "reset-offsets",
        "app",
        "--topic",
        "nope",
        "--to-earliest",
    ]);
    assert!(stderr.contains("UNKNOWN_TOPIC_OR_PARTITION"), "{stderr}");
    assert!(stderr.contains("hint: "), "{stderr}");

    // A member joins and owns partitions 0 and 1; partition 2 stays unowned.
    let member_id = runtime.block_on(async {
        let joined = client
            .join_group("app", "", 60_000, &["events"])
            .await
            .unwrap();
        assert_eq!(joined.leader_id, joined.member_id);
        let owned = vec![client::TopicPartitions {
            topic: "events".into(),
            partitions: vec![0, 1],
        }];
        let assignment = client
            .sync_group(
                "app",
                joined.generation_id,
                &joined.member_id,
                &[(joined.member_id.clone(), owned.clone())],
            )
            .await
            .unwrap();
        assert_eq!(assignment, Some(owned));
        client
            .heartbeat("app", joined.generation_id, &joined.member_id)
            .await
            .unwrap();
        // The broker itself refuses a standalone commit to a group with members.
        let refused = client
            .offset_commit(
                "app",
                client::STANDALONE_GENERATION,
                "",
                &[("events".into(), 0, 0)],
            )
            .await
            .unwrap_err();
        assert!(refused.kafka_error().is_some(), "{refused}");
        joined.member_id
    });
    let (out, _) = broker.ok(&["groups", "describe", "app"], "");
    assert!(
        out.starts_with("Group: app  State: Stable  Protocol: consumer (range)  Members: 1\n"),
        "{out}"
    );
    let rows = described(&out);
    assert_eq!(rows.len(), 3, "{out}");
    for row in &rows[..2] {
        assert_eq!(row[4], member_id, "{out}");
        assert_eq!(row[6], "lakestream-client", "{out}");
    }
    assert_eq!(rows[2][4..], ["-", "-", "-"], "{out}");
    let (out, _) = broker.ok(&["groups", "list"], "");
    assert!(
        table_rows(&out).contains(&vec!["app".into(), "Stable".into(), "consumer".into()]),
        "{out}"
    );
    let stderr = broker.fails(&[
        "groups",
        "reset-offsets",
        "app",
        "--topic",
        "events",
        "--to-earliest",
    ]);
    assert!(
        stderr.starts_with("lakestream: group app has 1 active member"),
        "{stderr}"
    );
    assert!(
        stderr.contains("hint: stop its consumers first"),
        "{stderr}"
    );
    let stderr = broker.fails(&["groups", "delete", "app"]);
    assert!(stderr.contains("NON_EMPTY_GROUP"), "{stderr}");
    assert!(
        stderr.contains("hint: group app still has members"),
        "{stderr}"
    );
    let (out, _) = broker.ok(&["groups", "describe", "app"], "");
    // The refused reset and commit left the offsets as they were.
    let rows = described(&out);
    let offsets: Vec<&[String]> = rows.iter().map(|r| &r[..4]).collect();
    assert_eq!(
        offsets,
        [
            ["0", "0", "5", "5"],
            ["1", "3", "3", "0"],
            ["2", "0", "1", "1"]
        ],
        "{out}"
    );

    // Once the member leaves, the group can be deleted.
    runtime
        .block_on(client.leave_group("app", &member_id))
        .unwrap();
    let (out, _) = broker.ok(&["groups", "delete", "app"], "");
    assert_eq!(out, "deleted group app\n");
    let (out, _) = broker.ok(&["groups", "list"], "");
    assert!(!out.contains("app"), "{out}");
    let stderr = broker.fails(&["groups", "describe", "app"]);
    assert!(
        stderr.starts_with("lakestream: group app does not exist\nhint: "),
        "{stderr}"
    );
    let stderr = broker.fails(&["groups", "delete", "app"]);
    assert!(stderr.contains("GROUP_ID_NOT_FOUND"), "{stderr}");
}
