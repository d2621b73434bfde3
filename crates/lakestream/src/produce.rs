//! `lakestream produce`: records from flags or stdin lines to a topic.

use std::collections::BTreeMap;
use std::io::{BufRead, Read};
use std::sync::mpsc;

use anyhow::{Context, bail};
use bytes::Bytes;
use client::{Acks, Client, Compression, Offset, PartitionId, ProduceRecord};

use crate::limits::{
    PRODUCE_BATCH_BYTES_MAX, PRODUCE_BATCH_RECORDS_MAX, PRODUCE_LINE_BYTES_MAX, PRODUCE_LINGER,
    PRODUCE_READ_AHEAD_LINES,
};
use crate::shared::{self, BootstrapArgs, explain, parse_key_value};

#[derive(clap::Args, Debug, PartialEq)]
pub struct ProduceArgs {
    pub topic: String,
    /// The partition to write to (default: by the key's hash, like Kafka's Java client, or
    /// round robin for records without a key).
    #[arg(long, short)]
    pub partition: Option<PartitionId>,
    /// The key of every record (a key split from a line with --key-separator wins).
    #[arg(long, short)]
    pub key: Option<String>,
    /// Produce one record with this value instead of reading lines from stdin.
    #[arg(long, short)]
    pub value: Option<String>,
    /// Split each stdin line at the first SEP into key and value.
    #[arg(long, value_name = "SEP", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub key_separator: Option<String>,
    /// A header of every record, e.g. source=cli; repeatable.
    #[arg(long = "header", short = 'H', value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub headers: Vec<(String, String)>,
    /// How many replicas must have the records before the broker answers: 0, 1 or all.
    #[arg(long, default_value = "all", value_parser = parse_acks)]
    pub acks: Acks,
    #[arg(long, value_enum, default_value_t = CompressionArg::None)]
    pub compression: CompressionArg,
    #[command(flatten)]
    pub bootstrap: BootstrapArgs,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq)]
pub enum CompressionArg {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl From<CompressionArg> for Compression {
    fn from(arg: CompressionArg) -> Compression {
        match arg {
            CompressionArg::None => Compression::None,
            CompressionArg::Gzip => Compression::Gzip,
            CompressionArg::Snappy => Compression::Snappy,
            CompressionArg::Lz4 => Compression::Lz4,
            CompressionArg::Zstd => Compression::Zstd,
        }
    }
}

pub(crate) fn parse_acks(s: &str) -> Result<Acks, String> {
    match s {
        "0" => Ok(Acks::None),
        "1" => Ok(Acks::Leader),
        "all" | "-1" => Ok(Acks::All),
        _ => Err(format!("expected 0, 1 or all, got {s:?}")),
    }
}

pub fn run(args: ProduceArgs) -> anyhow::Result<()> {
    let runtime = shared::runtime()?;
    let mut client = runtime.block_on(shared::connect(&args.bootstrap))?;
    let topic = runtime
        .block_on(client.topic_metadata(&args.topic))
        .map_err(|e| explain(e, &args.topic))?;
    let partitions = topic.partitions.len() as i32;
    if let Some(p) = args.partition
        && !(0..partitions).contains(&p)
    {
        bail!(
            "topic {} has no partition {p}\nhint: it has partitions 0 to {}.",
            args.topic,
            partitions - 1
        );
    }
    let mut producer = Producer::new(
        runtime,
        client,
        args.topic.clone(),
        partitions,
        args.acks,
        args.compression.into(),
        args.partition,
    );
    let template = RecordTemplate {
        key: args
            .key
            .as_deref()
            .map(|k| Bytes::copy_from_slice(k.as_bytes())),
        key_separator: args.key_separator.as_deref().map(str::as_bytes),
        headers: &args.headers,
    };
    if let Some(value) = &args.value {
        producer.add(template.record(None, value.as_bytes()))?;
    } else {
        let lines = read_lines_in_background();
        loop {
            match lines.recv_timeout(PRODUCE_LINGER) {
                Ok(line) => {
                    let line = line?;
                    if !line.is_empty() {
                        producer.add(template.line(&line))?;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => producer.flush_all()?,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
    }
    producer.flush_all()?;
    eprintln!("{}", producer.summary());
    Ok(())
}

/// Lines of stdin without their line ending, read on a thread so that the producer can send
/// what it has while waiting for more.
fn read_lines_in_background() -> mpsc::Receiver<anyhow::Result<Vec<u8>>> {
    let (sender, receiver) = mpsc::sync_channel(PRODUCE_READ_AHEAD_LINES);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut number = 0u64;
        loop {
            number += 1;
            let line = read_line(&mut stdin, PRODUCE_LINE_BYTES_MAX)
                .with_context(|| format!("reading line {number} of stdin"));
            let done = matches!(line, Ok(None) | Err(_));
            if sender.send(line.map(Option::unwrap_or_default)).is_err() || done {
                return;
            }
        }
    });
    receiver
}

/// One line without `\n` or `\r\n`; `None` at the end of input.
fn read_line(input: &mut impl BufRead, max_bytes: usize) -> anyhow::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    let limit = max_bytes as u64 + 1;
    input.take(limit).read_until(b'\n', &mut line)?;
    if line.is_empty() {
        return Ok(None);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    } else if line.len() > max_bytes {
        bail!("the line is longer than {max_bytes} bytes, the most one record may hold");
    }
    Ok(Some(line))
}

/// What every record of this run shares.
struct RecordTemplate<'a> {
    key: Option<Bytes>,
    key_separator: Option<&'a [u8]>,
    headers: &'a [(String, String)],
}

impl RecordTemplate<'_> {
    fn record(&self, key: Option<&[u8]>, value: &[u8]) -> ProduceRecord {
        ProduceRecord {
            key: key.map(Bytes::copy_from_slice).or_else(|| self.key.clone()),
            value: Some(Bytes::copy_from_slice(value)),
            headers: self
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), Some(Bytes::copy_from_slice(v.as_bytes()))))
                .collect(),
            timestamp: None,
        }
    }

    /// A stdin line: `KEY SEP VALUE` with a separator (a line without one is all value).
    fn line(&self, line: &[u8]) -> ProduceRecord {
        match self.key_separator.and_then(|sep| split_once(line, sep)) {
            Some((key, value)) => self.record(Some(key), value),
            None => self.record(None, line),
        }
    }
}

fn split_once<'a>(haystack: &'a [u8], separator: &[u8]) -> Option<(&'a [u8], &'a [u8])> {
    let at = haystack
        .windows(separator.len())
        .position(|w| w == separator)?;
    Some((&haystack[..at], &haystack[at + separator.len()..]))
}

/// Picks partitions as Kafka's Java client does for keyed records (murmur2 of the key), and
/// round robin for the rest.
struct Partitioner {
    partitions: i32,
    next: i32,
}

impl Partitioner {
    fn new(partitions: i32) -> Partitioner {
        Partitioner {
            partitions: partitions.max(1),
            next: 0,
        }
    }

    fn partition(&mut self, key: Option<&[u8]>) -> PartitionId {
        match key {
            Some(key) => records::partition_for_key(key, self.partitions),
            None => {
                let partition = self.next;
                self.next = (self.next + 1) % self.partitions;
                partition
            }
        }
    }
}

#[derive(Default)]
struct Pending {
    records: Vec<ProduceRecord>,
    bytes: usize,
}

/// First and last offset produced to a partition.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OffsetRange {
    pub first: Offset,
    pub last: Offset,
}

/// Sends records in batches per partition, one request at a time (shared with `gen`).
pub(crate) struct Producer {
    runtime: tokio::runtime::Runtime,
    client: Client,
    topic: String,
    acks: Acks,
    compression: Compression,
    partitioner: Partitioner,
    explicit_partition: Option<PartitionId>,
    pending: BTreeMap<PartitionId, Pending>,
    produced: BTreeMap<PartitionId, OffsetRange>,
    count: u64,
}

impl Producer {
    /// A producer for `topic`, which has `partitions` partitions; records go to
    /// `explicit_partition`, or by key hash (round robin without a key).
    pub(crate) fn new(
        runtime: tokio::runtime::Runtime,
        client: Client,
        topic: String,
        partitions: i32,
        acks: Acks,
        compression: Compression,
        explicit_partition: Option<PartitionId>,
    ) -> Producer {
        Producer {
            runtime,
            client,
            topic,
            acks,
            compression,
            partitioner: Partitioner::new(partitions),
            explicit_partition,
            pending: BTreeMap::new(),
            produced: BTreeMap::new(),
            count: 0,
        }
    }

    /// Records the broker has acknowledged (or, with acks=0, sent).
    pub(crate) fn count(&self) -> u64 {
        self.count
    }

    /// The closing line: how many records went where.
    pub(crate) fn summary(&self) -> String {
        summary(&self.topic, self.count, &self.produced, self.acks)
    }

    pub(crate) fn add(&mut self, record: ProduceRecord) -> anyhow::Result<()> {
        let partition = match self.explicit_partition {
            Some(p) => p,
            None => self.partitioner.partition(record.key.as_deref()),
        };
        let pending = self.pending.entry(partition).or_default();
        pending.bytes += record.approximate_size();
        pending.records.push(record);
        if pending.records.len() >= PRODUCE_BATCH_RECORDS_MAX
            || pending.bytes >= PRODUCE_BATCH_BYTES_MAX
        {
            self.flush(partition)?;
        }
        Ok(())
    }

    pub(crate) fn flush_all(&mut self) -> anyhow::Result<()> {
        let partitions: Vec<PartitionId> = self.pending.keys().copied().collect();
        for partition in partitions {
            self.flush(partition)?;
        }
        Ok(())
    }

    fn flush(&mut self, partition: PartitionId) -> anyhow::Result<()> {
        let Some(pending) = self.pending.remove(&partition) else {
            return Ok(());
        };
        let records = pending.records;
        if records.is_empty() {
            return Ok(());
        }
        let base_offset = self
            .runtime
            .block_on(self.client.produce(
                &self.topic,
                partition,
                self.acks,
                self.compression,
                &records,
            ))
            .map_err(|e| {
                let error = explain(e, &self.topic);
                match self.count {
                    0 => error,
                    n => error.context(format!("{n} records were produced before this failed")),
                }
            })?;
        self.count += records.len() as u64;
        if let Some(base_offset) = base_offset {
            let last = base_offset + records.len() as Offset - 1;
            self.produced
                .entry(partition)
                .and_modify(|range| range.last = last)
                .or_insert(OffsetRange {
                    first: base_offset,
                    last,
                });
        }
        Ok(())
    }
}

/// The closing line on stderr: how many records went where.
pub fn summary(
    topic: &str,
    count: u64,
    produced: &BTreeMap<PartitionId, OffsetRange>,
    acks: Acks,
) -> String {
    let noun = if count == 1 { "record" } else { "records" };
    let mut out = format!("produced {count} {noun} to {topic}");
    if acks == Acks::None && count > 0 {
        out.push_str(" (acks=0: offsets unknown)");
        return out;
    }
    let ranges: Vec<String> = produced
        .iter()
        .map(|(partition, range)| {
            if range.first == range.last {
                format!("partition {partition} offset {}", range.first)
            } else {
                format!(
                    "partition {partition} offsets {}..={}",
                    range.first, range.last
                )
            }
        })
        .collect();
    if !ranges.is_empty() {
        out.push_str(": ");
        out.push_str(&ranges.join(", "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitioner_hashes_keys_and_rotates_the_rest() {
        let mut p = Partitioner::new(3);
        let keyed = p.partition(Some(b"user-1"));
        assert_eq!(p.partition(Some(b"user-1")), keyed, "stable per key");
        assert!((0..3).contains(&keyed));
        let unkeyed: Vec<_> = (0..4).map(|_| p.partition(None)).collect();
        assert_eq!(unkeyed, [0, 1, 2, 0]);
        assert_eq!(Partitioner::new(1).partition(Some(b"anything")), 0);
    }

    #[test]
    fn lines_split_into_key_and_value() {
        let headers = vec![("source".to_owned(), "cli".to_owned())];
        let template = RecordTemplate {
            key: Some(Bytes::from_static(b"default")),
            key_separator: Some(b"::"),
            headers: &headers,
        };
        let check = |line: &str, key: Option<&str>, value: &str| {
            let record = template.line(line.as_bytes());
            assert_eq!(record.key.as_deref(), key.map(str::as_bytes), "{line}");
            assert_eq!(record.value.as_deref(), Some(value.as_bytes()), "{line}");
            assert_eq!(
                record.headers,
                [("source".to_owned(), Some(Bytes::from("cli")))]
            );
        };
        check("k1::v1", Some("k1"), "v1");
        check("k1::v::1", Some("k1"), "v::1");
        check("::v", Some(""), "v");
        check("no separator", Some("default"), "no separator");
        let plain = RecordTemplate {
            key: None,
            key_separator: None,
            headers: &[],
        };
        assert_eq!(plain.line(b"a\tb").key, None);
    }

    #[test]
    fn reads_lines_with_any_ending_and_a_bound() {
        let mut input = &b"one\ntwo\r\n\nlast"[..];
        let mut lines = Vec::new();
        while let Some(line) = read_line(&mut input, 10).unwrap() {
            lines.push(String::from_utf8(line).unwrap());
        }
        assert_eq!(lines, ["one", "two", "", "last"]);
        assert_eq!(
            read_line(&mut &b"0123456789\n"[..], 10)
                .unwrap()
                .unwrap()
                .len(),
            10
        );
        assert!(read_line(&mut &b"0123456789A\n"[..], 10).is_err());
    }

    #[test]
    fn acks_parse() {
        assert_eq!(parse_acks("0"), Ok(Acks::None));
        assert_eq!(parse_acks("1"), Ok(Acks::Leader));
        assert_eq!(parse_acks("all"), Ok(Acks::All));
        assert_eq!(parse_acks("-1"), Ok(Acks::All));
        assert!(parse_acks("2").is_err());
    }

    #[test]
    fn summaries() {
        let ranges = BTreeMap::from([
            (0, OffsetRange { first: 0, last: 9 }),
            (2, OffsetRange { first: 5, last: 5 }),
        ]);
        assert_eq!(
            summary("orders", 11, &ranges, Acks::All),
            "produced 11 records to orders: partition 0 offsets 0..=9, partition 2 offset 5"
        );
        assert_eq!(
            summary("orders", 3, &BTreeMap::new(), Acks::None),
            "produced 3 records to orders (acks=0: offsets unknown)"
        );
        assert_eq!(
            summary("orders", 0, &BTreeMap::new(), Acks::All),
            "produced 0 records to orders"
        );
    }
}
