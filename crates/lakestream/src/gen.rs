//! `lakestream gen iot`: a load generator of IoT sensor readings, JSON events keyed by device,
//! produced with the project's own client at a steady rate (or as fast as the broker takes
//! them), into a topic that SQL reads as a table with typed columns.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::bail;
use bytes::Bytes;
use client::{Acks, ProduceRecord, ResponseError};

use crate::produce::{CompressionArg, Producer, parse_acks};
use crate::shared::{self, BootstrapArgs, explain, parse_key_value};

/// What a topic created by `gen iot` declares its values to be.
pub const IOT_VALUE_SCHEMA: &str = "timestamp BIGINT, device_name STRING, metric DOUBLE";

/// Records generated at a time when there is no rate to keep (then the producer sends full
/// batches on its own).
const UNPACED_CHUNK: u64 = 1000;

/// The longest the generator sleeps at once, so that Ctrl-C and the progress line stay prompt.
const MAX_SLEEP: Duration = Duration::from_millis(200);

/// How often the progress line is updated.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

#[derive(clap::Args, Debug)]
pub struct GenArgs {
    #[command(subcommand)]
    pub kind: GenKind,
    #[command(flatten)]
    pub bootstrap: BootstrapArgs,
}

#[derive(clap::Subcommand, Debug, PartialEq)]
pub enum GenKind {
    /// Sensor readings: {"timestamp": MS, "device_name": "sensor-K", "metric": FLOAT}, keyed by
    /// device name. A missing topic is created with value.format=json and a declared
    /// value.schema, so SQL sees the columns timestamp, device_name and metric.
    Iot(IotArgs),
}

#[derive(clap::Args, Debug, PartialEq)]
pub struct IotArgs {
    /// The topic to write to.
    #[arg(long)]
    pub topic: String,
    /// Records per second; 0 sends as fast as the broker acknowledges.
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// Records in all (default: until Ctrl-C).
    #[arg(long)]
    pub count: Option<u64>,
    /// Devices the readings come from: sensor-1 .. sensor-N.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub devices: u32,
    /// Partitions of the topic, when it has to be created.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..))]
    pub partitions: i32,
    /// More topic configs when the topic is created, e.g. segment.bytes=1048576; repeatable.
    #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub configs: Vec<(String, String)>,
    /// Makes the devices and metrics the same on every run (timestamps are the wall clock).
    #[arg(long)]
    pub seed: Option<u64>,
    /// How many replicas must have the records before the broker answers: 0, 1 or all.
    #[arg(long, default_value = "all", value_parser = parse_acks)]
    pub acks: Acks,
    /// The codec of the produced batches.
    #[arg(long, value_enum, default_value_t = CompressionArg::None)]
    pub compression: CompressionArg,
}

pub fn run(args: GenArgs) -> anyhow::Result<()> {
    match args.kind {
        GenKind::Iot(iot) => run_iot(iot, &args.bootstrap),
    }
}

fn run_iot(args: IotArgs, bootstrap: &BootstrapArgs) -> anyhow::Result<()> {
    let runtime = shared::runtime()?;
    let mut client = runtime.block_on(shared::connect(bootstrap))?;
    let mut configs = vec![
        ("value.format".to_string(), "json".to_string()),
        ("value.schema".to_string(), IOT_VALUE_SCHEMA.to_string()),
    ];
    configs.extend(args.configs.iter().cloned());
    match runtime.block_on(client.create_topics(&args.topic, args.partitions, &configs)) {
        Ok(()) => eprintln!(
            "created topic {} with {} partition{} (value.format=json, value.schema={IOT_VALUE_SCHEMA})",
            args.topic,
            args.partitions,
            if args.partitions == 1 { "" } else { "s" }
        ),
        Err(error) if error.kafka_error() == Some(ResponseError::TopicAlreadyExists) => {}
        Err(error) => return Err(explain(error, &args.topic)),
    }
    let topic = runtime
        .block_on(client.topic_metadata(&args.topic))
        .map_err(|e| explain(e, &args.topic))?;
    let partitions = topic.partitions.len() as i32;
    if partitions == 0 {
        bail!("topic {} has no partitions", args.topic);
    }
    let mut producer = Producer::new(
        runtime,
        client,
        args.topic.clone(),
        partitions,
        args.acks,
        args.compression.into(),
        None,
    );
    let seed = args.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    let mut events = IotEvents::new(args.devices, seed);
    let stop = stop_on_ctrl_c();
    let started = Instant::now();
    let mut progress = Progress::new(std::io::stderr().is_terminal(), started);
    let mut generated = 0u64;
    let limit = args.count.unwrap_or(u64::MAX);
    while generated < limit && !stop.load(Ordering::Relaxed) {
        let due = match args.rate {
            0 => generated.saturating_add(UNPACED_CHUNK),
            rate => records_due(started.elapsed(), rate),
        }
        .min(limit);
        while generated < due {
            let event = events.next(now_ms());
            producer.add(event.record())?;
            generated += 1;
        }
        if args.rate > 0 {
            // What is due goes out now; then wait for the next record's time.
            producer.flush_all()?;
            let next = due_at(generated + 1, args.rate);
            let wait = next.saturating_sub(started.elapsed()).min(MAX_SLEEP);
            if generated < limit && !wait.is_zero() {
                std::thread::sleep(wait);
            }
        }
        progress.tick(producer.count(), Instant::now());
    }
    producer.flush_all()?;
    progress.finish(producer.count(), Instant::now());
    eprintln!("{}", producer.summary());
    Ok(())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A flag that the first Ctrl-C sets (the generator then sends what it has and stops); a
/// second Ctrl-C exits at once.
fn stop_on_ctrl_c() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    std::thread::spawn(move || {
        let Ok(runtime) = shared::runtime() else {
            return;
        };
        runtime.block_on(async {
            if tokio::signal::ctrl_c().await.is_err() {
                return;
            }
            flag.store(true, Ordering::Relaxed);
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        });
    });
    stop
}

/// How many records are due `elapsed` after the start at `rate` per second.
pub fn records_due(elapsed: Duration, rate: u64) -> u64 {
    let due = elapsed.as_nanos().saturating_mul(rate as u128) / 1_000_000_000;
    u64::try_from(due).unwrap_or(u64::MAX)
}

/// When (after the start) `n` records are due at `rate` per second: the inverse of
/// [`records_due`], rounded up to the nanosecond.
pub fn due_at(n: u64, rate: u64) -> Duration {
    let nanos = (n as u128 * 1_000_000_000).div_ceil(rate.max(1) as u128);
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// One sensor reading.
#[derive(Debug, Clone, PartialEq)]
pub struct IotEvent {
    pub timestamp: i64,
    pub device: String,
    pub metric: f64,
}

impl IotEvent {
    /// `{"timestamp":MS,"device_name":"sensor-K","metric":FLOAT}`.
    pub fn json(&self) -> String {
        format!(
            r#"{{"timestamp":{},"device_name":"{}","metric":{}}}"#,
            self.timestamp,
            self.device,
            json_number(self.metric)
        )
    }

    /// The record: keyed by device, with the event's time as its CreateTime.
    pub fn record(&self) -> ProduceRecord {
        ProduceRecord {
            key: Some(Bytes::from(self.device.clone())),
            value: Some(Bytes::from(self.json())),
            headers: Vec::new(),
            timestamp: Some(self.timestamp),
        }
    }
}

/// A float as JSON: always with a fraction or exponent (so that readers see a float), never
/// NaN or infinite.
fn json_number(x: f64) -> String {
    let x = if x.is_finite() { x } else { 0.0 };
    let text = format!("{x:?}");
    if text.contains(['.', 'e', 'E']) {
        text
    } else {
        format!("{text}.0")
    }
}

/// The readings of `devices` sensors: each a random walk pulled back towards a level of its own
/// (between 15 and 30), with three decimals; the device of each reading is picked at random.
pub struct IotEvents {
    rng: SplitMix64,
    /// Per device: where its walk is pulled back to, and where it is.
    homes: Vec<f64>,
    levels: Vec<f64>,
}

impl IotEvents {
    pub fn new(devices: u32, seed: u64) -> IotEvents {
        let mut rng = SplitMix64(seed);
        let homes: Vec<f64> = (0..devices.max(1))
            .map(|_| round3(15.0 + rng.unit() * 15.0))
            .collect();
        IotEvents {
            rng,
            levels: homes.clone(),
            homes,
        }
    }

    pub fn next(&mut self, timestamp: i64) -> IotEvent {
        let k = (self.rng.next() % self.levels.len() as u64) as usize;
        let step = self.rng.unit() - 0.5;
        let pull = (self.homes[k] - self.levels[k]) * 0.05;
        let level = round3(self.levels[k] + pull + step);
        self.levels[k] = level;
        IotEvent {
            timestamp,
            device: format!("sensor-{}", k + 1),
            metric: level,
        }
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// A small, fast, seedable generator (Steele, Lea and Flood's SplitMix64).
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// In [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The progress display on stderr: records sent and the rate over the last second, every
/// second; one line rewritten in place on a terminal, plain lines otherwise.
struct Progress {
    tty: bool,
    started: Instant,
    /// When the line was last shown, and the count then.
    last: (Instant, u64),
    shown: bool,
}

impl Progress {
    fn new(tty: bool, now: Instant) -> Progress {
        Progress {
            tty,
            started: now,
            last: (now, 0),
            shown: false,
        }
    }

    fn tick(&mut self, sent: u64, now: Instant) {
        let (at, before) = self.last;
        if now.duration_since(at) < PROGRESS_EVERY {
            return;
        }
        let line = progress_line(sent, sent.saturating_sub(before), now.duration_since(at));
        self.show(&line);
        self.last = (now, sent);
    }

    /// On a terminal, the line's last state (the average rate of the run) and a newline.
    fn finish(&mut self, sent: u64, now: Instant) {
        if self.tty && self.shown {
            let line = progress_line(sent, sent, now.duration_since(self.started));
            self.show(&line);
            eprintln!();
        }
    }

    fn show(&mut self, line: &str) {
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[2K{line}");
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
        self.shown = true;
    }
}

/// `sent 12000 records, 1000/s`: the total and the rate of `recent` records over `over`.
fn progress_line(sent: u64, recent: u64, over: Duration) -> String {
    let seconds = over.as_secs_f64();
    let rate = if seconds > 0.0 {
        recent as f64 / seconds
    } else {
        0.0
    };
    let noun = if sent == 1 { "record" } else { "records" };
    format!("sent {sent} {noun}, {rate:.0}/s")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_json_of_the_declared_schema() {
        let mut events = IotEvents::new(3, 42);
        for n in 0..1000 {
            let event = events.next(1_700_000_000_000 + n);
            let value: serde_json::Value = serde_json::from_str(&event.json()).unwrap();
            let object = value.as_object().unwrap();
            assert_eq!(object.len(), 3, "{value}");
            assert_eq!(object["timestamp"].as_i64(), Some(1_700_000_000_000 + n));
            let device = object["device_name"].as_str().unwrap();
            assert!(
                ["sensor-1", "sensor-2", "sensor-3"].contains(&device),
                "{device}"
            );
            assert!(object["metric"].is_f64(), "{value}");
            assert_eq!(object["metric"].as_f64(), Some(event.metric), "round trip");
            assert_eq!(round3(event.metric), event.metric);
            let record = event.record();
            assert_eq!(record.key.as_deref(), Some(device.as_bytes()));
            assert_eq!(record.timestamp, Some(1_700_000_000_000 + n));
        }
        // The schema a created topic declares parses, with these names.
        let schema = IOT_VALUE_SCHEMA.split(", ").collect::<Vec<_>>();
        assert_eq!(
            schema,
            ["timestamp BIGINT", "device_name STRING", "metric DOUBLE"]
        );
    }

    #[test]
    fn a_seed_makes_the_same_readings_and_every_device_reports() {
        let run = |seed| {
            let mut events = IotEvents::new(5, seed);
            (0..500).map(|_| events.next(0)).collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
        let devices: std::collections::BTreeSet<String> =
            run(7).into_iter().map(|event| event.device).collect();
        assert_eq!(devices.len(), 5);
        // A walk moves by little per reading of the same device, and stays near its home.
        let mut events = IotEvents::new(1, 1);
        let mut last = events.next(0).metric;
        for _ in 0..100_000 {
            let metric = events.next(0).metric;
            assert!((metric - last).abs() <= 1.0, "{last} -> {metric}");
            assert!((5.0..=40.0).contains(&metric), "{metric}");
            last = metric;
        }
    }

    #[test]
    fn floats_stay_floats_in_json() {
        assert_eq!(json_number(21.0), "21.0");
        assert_eq!(json_number(21.457), "21.457");
        assert_eq!(json_number(-0.5), "-0.5");
        assert_eq!(json_number(f64::NAN), "0.0");
        assert_eq!(json_number(1e300), "1e300");
    }

    #[test]
    fn rate_math() {
        let ms = Duration::from_millis;
        assert_eq!(records_due(ms(0), 1000), 0);
        assert_eq!(records_due(ms(1), 1000), 1);
        assert_eq!(records_due(ms(999), 1000), 999);
        assert_eq!(records_due(ms(2500), 10), 25);
        assert_eq!(records_due(ms(99), 10), 0);
        assert_eq!(records_due(Duration::from_secs(1), 3), 3);
        assert_eq!(
            records_due(Duration::from_secs(u64::MAX), u64::MAX),
            u64::MAX
        );
        assert_eq!(due_at(1, 1000), ms(1));
        assert_eq!(due_at(25, 10), ms(2500));
        assert_eq!(due_at(1, 3), Duration::from_nanos(333_333_334));
        // due_at is the first moment records_due reaches n.
        for rate in [1, 3, 7, 1000, 123_457] {
            for n in [1, 2, 10, 999, 12_345] {
                let at = due_at(n, rate);
                assert!(records_due(at, rate) >= n, "rate {rate} n {n}");
                assert!(
                    records_due(at - Duration::from_nanos(1), rate) < n,
                    "rate {rate} n {n}"
                );
            }
        }
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: GenArgs,
    }

    #[test]
    fn flags() {
        use clap::Parser;
        let parse = |argv: &[&str]| {
            Cli::try_parse_from(std::iter::once("gen").chain(argv.iter().copied()))
                .map(|cli| cli.args)
        };
        let args = parse(&["iot", "--topic", "t"]).unwrap();
        let GenKind::Iot(iot) = &args.kind;
        assert_eq!(
            (iot.rate, iot.count, iot.devices, iot.partitions, iot.seed),
            (1000, None, 10, 1, None)
        );
        assert_eq!(args.bootstrap.bootstrap, "127.0.0.1:9092");
        let args = parse(&[
            "iot",
            "--topic",
            "t",
            "--rate",
            "0",
            "--count",
            "20000",
            "--devices",
            "3",
            "--partitions",
            "4",
            "--seed",
            "9",
            "--config",
            "segment.bytes=1000",
            "--bootstrap",
            "h:1",
        ])
        .unwrap();
        let GenKind::Iot(iot) = &args.kind;
        assert_eq!(
            (iot.rate, iot.count, iot.devices, iot.partitions, iot.seed),
            (0, Some(20000), 3, 4, Some(9))
        );
        assert_eq!(iot.configs, [("segment.bytes".into(), "1000".into())]);
        assert_eq!(args.bootstrap.bootstrap, "h:1");
        for bad in [
            &["iot"][..],
            &["iot", "--topic", "t", "--devices", "0"],
            &["iot", "--topic", "t", "--partitions", "0"],
            &["iot", "--topic", "t", "--rate", "-1"],
            &["logs", "--topic", "t"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn progress_lines() {
        assert_eq!(
            progress_line(12_000, 1000, Duration::from_secs(1)),
            "sent 12000 records, 1000/s"
        );
        assert_eq!(
            progress_line(1, 1, Duration::from_millis(500)),
            "sent 1 record, 2/s"
        );
        assert_eq!(progress_line(0, 0, Duration::ZERO), "sent 0 records, 0/s");
    }
}
