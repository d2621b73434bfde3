//! The people-facing commands end to end: starts `lakestream serve` on a free port in a
//! scratch data directory and drives `topics`, `produce` and `consume` through the binary.

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
