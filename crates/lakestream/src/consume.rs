//! `lakestream consume`: records of a topic to stdout, one line each, like `kcat -C`.

use std::io::{self, Write};

use anyhow::bail;
use client::{
    Client, EARLIEST_TIMESTAMP, LATEST_TIMESTAMP, Offset, PartitionId, Record, TimestampMs,
};

use crate::limits::{CONSUME_EXIT_FETCH_WAIT_MS, CONSUME_FETCH_BYTES_MAX, CONSUME_FETCH_WAIT_MS};
use crate::shared::{self, BootstrapArgs, explain};

/// `partition offset timestamp key value headers`, tab-separated.
pub const DEFAULT_FORMAT: &str = r"%p\t%o\t%T\t%k\t%s\t%h\n";

#[derive(clap::Args, Debug, PartialEq)]
pub struct ConsumeArgs {
    pub topic: String,
    /// Read only this partition (default: all).
    #[arg(long, short)]
    pub partition: Option<PartitionId>,
    /// Where to start in each partition: earliest, latest, an offset, or @TIMESTAMP_MS (the
    /// first record at or after that time).
    #[arg(long, short = 'o', default_value = "earliest", value_parser = parse_start)]
    pub from: Start,
    /// Stop after this many records.
    #[arg(long, short)]
    pub count: Option<u64>,
    /// Stop at the end of the partitions instead of waiting for new records.
    #[arg(long, short)]
    pub exit: bool,
    /// The line to print per record: %t topic, %p partition, %o offset, %T timestamp (ms),
    /// %k key, %s value, %h headers (k=v,k=v), %K key length, %S value length, %% a percent
    /// sign; \n newline, \t tab, \\ backslash.
    #[arg(long, short, default_value = DEFAULT_FORMAT, value_parser = Format::parse)]
    pub format: Format,
    #[command(flatten)]
    pub bootstrap: BootstrapArgs,
}

/// Where consuming starts in each partition.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Start {
    Earliest,
    Latest,
    Offset(Offset),
    Timestamp(TimestampMs),
}

fn parse_start(s: &str) -> Result<Start, String> {
    let expected = "expected earliest, latest, an offset, or @TIMESTAMP_MS";
    match s {
        "earliest" | "beginning" => Ok(Start::Earliest),
        "latest" | "end" => Ok(Start::Latest),
        _ => {
            if let Some(ms) = s.strip_prefix('@') {
                match ms.parse::<TimestampMs>() {
                    Ok(ms) if ms >= 0 => Ok(Start::Timestamp(ms)),
                    _ => Err(format!("{expected}, got {s:?}")),
                }
            } else {
                match s.parse::<Offset>() {
                    Ok(offset) if offset >= 0 => Ok(Start::Offset(offset)),
                    _ => Err(format!("{expected}, got {s:?}")),
                }
            }
        }
    }
}

/// A parsed `--format`.
#[derive(Debug, Clone, PartialEq)]
pub struct Format(Vec<Piece>);

#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Literal(Vec<u8>),
    Topic,
    Partition,
    Offset,
    Timestamp,
    Key,
    Value,
    Headers,
    KeyLength,
    ValueLength,
}

impl Format {
    pub fn parse(s: &str) -> Result<Format, String> {
        let mut pieces = Vec::new();
        let mut literal = Vec::new();
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            let field = match c {
                '%' => match chars.next() {
                    Some('t') => Piece::Topic,
                    Some('p') => Piece::Partition,
                    Some('o') => Piece::Offset,
                    Some('T') => Piece::Timestamp,
                    Some('k') => Piece::Key,
                    Some('s') => Piece::Value,
                    Some('h') => Piece::Headers,
                    Some('K') => Piece::KeyLength,
                    Some('S') => Piece::ValueLength,
                    Some('%') => {
                        literal.push(b'%');
                        continue;
                    }
                    Some(other) => return Err(format!("unknown format field %{other}")),
                    None => return Err("the format ends in a lone %".to_owned()),
                },
                '\\' => {
                    let escaped = match chars.next() {
                        Some('n') => '\n',
                        Some('t') => '\t',
                        Some('r') => '\r',
                        Some('0') => '\0',
                        Some('\\') => '\\',
                        Some(other) => return Err(format!("unknown escape \\{other}")),
                        None => return Err("the format ends in a lone \\".to_owned()),
                    };
                    literal.extend_from_slice(escaped.encode_utf8(&mut [0; 4]).as_bytes());
                    continue;
                }
                c => {
                    literal.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                    continue;
                }
            };
            if !literal.is_empty() {
                pieces.push(Piece::Literal(std::mem::take(&mut literal)));
            }
            pieces.push(field);
        }
        if !literal.is_empty() {
            pieces.push(Piece::Literal(literal));
        }
        Ok(Format(pieces))
    }

    /// Writes one record. Keys, values and header values go out as raw bytes; a missing key
    /// or value prints as nothing, and its length as -1.
    pub fn write(
        &self,
        out: &mut impl Write,
        topic: &str,
        partition: PartitionId,
        record: &Record,
    ) -> io::Result<()> {
        let length = |b: &Option<bytes::Bytes>| b.as_ref().map_or(-1, |b| b.len() as i64);
        for piece in &self.0 {
            match piece {
                Piece::Literal(bytes) => out.write_all(bytes)?,
                Piece::Topic => out.write_all(topic.as_bytes())?,
                Piece::Partition => write!(out, "{partition}")?,
                Piece::Offset => write!(out, "{}", record.offset)?,
                Piece::Timestamp => write!(out, "{}", record.timestamp)?,
                Piece::Key => out.write_all(record.key.as_deref().unwrap_or_default())?,
                Piece::Value => out.write_all(record.value.as_deref().unwrap_or_default())?,
                Piece::KeyLength => write!(out, "{}", length(&record.key))?,
                Piece::ValueLength => write!(out, "{}", length(&record.value))?,
                Piece::Headers => {
                    for (i, (key, value)) in record.headers.iter().enumerate() {
                        if i > 0 {
                            out.write_all(b",")?;
                        }
                        out.write_all(key.as_bytes())?;
                        if let Some(value) = value {
                            out.write_all(b"=")?;
                            out.write_all(value)?;
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

pub fn run(args: ConsumeArgs) -> anyhow::Result<()> {
    shared::runtime()?.block_on(async {
        let mut client = shared::connect(&args.bootstrap).await?;
        let topic = &args.topic;
        let metadata = client
            .topic_metadata(topic)
            .await
            .map_err(|e| explain(e, topic))?;
        let mut partitions: Vec<PartitionId> =
            metadata.partitions.iter().map(|p| p.partition).collect();
        partitions.sort();
        if let Some(p) = args.partition {
            if !partitions.contains(&p) {
                bail!(
                    "topic {topic} has no partition {p}\nhint: it has {} partitions, numbered from 0.",
                    partitions.len()
                );
            }
            partitions = vec![p];
        }
        let mut positions = Vec::with_capacity(partitions.len());
        for partition in partitions {
            let start = start_offset(&mut client, topic, partition, args.from)
                .await
                .map_err(|e| explain(e, topic))?;
            if args.exit {
                let (end, _) = client
                    .list_offsets(topic, partition, LATEST_TIMESTAMP)
                    .await
                    .map_err(|e| explain(e, topic))?;
                if start >= end {
                    continue;
                }
            }
            positions.push((partition, start));
        }
        let mut remaining = args.count;
        let stdout = io::stdout();
        let mut out = io::BufWriter::new(stdout.lock());
        let wait_ms = if args.exit {
            CONSUME_EXIT_FETCH_WAIT_MS
        } else {
            CONSUME_FETCH_WAIT_MS
        };
        while !positions.is_empty() && remaining != Some(0) {
            let fetched = client
                .fetch_partitions(topic, &positions, wait_ms, CONSUME_FETCH_BYTES_MAX)
                .await
                .map_err(|e| explain(e, topic))?;
            for partition in fetched {
                for record in &partition.records {
                    if remaining == Some(0) {
                        break;
                    }
                    let written = args.format.write(&mut out, topic, partition.partition, record);
                    if quiet_on_broken_pipe(written)? {
                        return Ok(());
                    }
                    remaining = remaining.map(|n| n - 1);
                }
                let at = positions
                    .iter()
                    .position(|(p, _)| *p == partition.partition)
                    .expect("fetch_partitions answers the partitions asked");
                positions[at].1 = partition.next_offset;
                // With --exit a partition is done once it is read up to the high watermark
                // its last fetch reported.
                if args.exit && partition.next_offset >= partition.high_watermark {
                    positions.remove(at);
                }
            }
            if quiet_on_broken_pipe(out.flush())? {
                return Ok(());
            }
        }
        if quiet_on_broken_pipe(out.flush())? {
            return Ok(());
        }
        Ok(())
    })
}

/// `Ok(true)` when the reader went away (e.g. `| head`): stop quietly, as `cat` does.
fn quiet_on_broken_pipe(result: io::Result<()>) -> anyhow::Result<bool> {
    match result {
        Ok(()) => Ok(false),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(true),
        Err(e) => Err(anyhow::Error::new(e).context("writing to stdout")),
    }
}

async fn start_offset(
    client: &mut Client,
    topic: &str,
    partition: PartitionId,
    start: Start,
) -> Result<Offset, client::Error> {
    Ok(match start {
        Start::Earliest => {
            client
                .list_offsets(topic, partition, EARLIEST_TIMESTAMP)
                .await?
                .0
        }
        Start::Latest => {
            client
                .list_offsets(topic, partition, LATEST_TIMESTAMP)
                .await?
                .0
        }
        Start::Offset(offset) => offset,
        Start::Timestamp(ms) => match client.list_offsets(topic, partition, ms).await?.0 {
            // No record at or after that time: start at the end.
            -1 => {
                client
                    .list_offsets(topic, partition, LATEST_TIMESTAMP)
                    .await?
                    .0
            }
            offset => offset,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use client::StrBytes;

    fn record(key: Option<&str>, value: Option<&str>, headers: &[(&str, Option<&str>)]) -> Record {
        Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: client::TimestampType::Creation,
            offset: 42,
            sequence: -1,
            timestamp: 1_700_000_000_000,
            key: key.map(|k| Bytes::copy_from_slice(k.as_bytes())),
            value: value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
            headers: headers
                .iter()
                .map(|(k, v)| {
                    let value = v.map(|v| Bytes::copy_from_slice(v.as_bytes()));
                    (StrBytes::from_string(k.to_string()), value)
                })
                .collect(),
        }
    }

    fn render(format: &str, record: &Record) -> String {
        let format = Format::parse(format).unwrap();
        let mut out = Vec::new();
        format.write(&mut out, "orders", 3, record).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn default_format_is_tab_separated() {
        let check = |record: &Record, expect: &str| {
            assert_eq!(render(DEFAULT_FORMAT, record), expect);
        };
        check(
            &record(Some("k"), Some("v"), &[("a", Some("1")), ("b", Some("2"))]),
            "3\t42\t1700000000000\tk\tv\ta=1,b=2\n",
        );
        check(
            &record(None, Some("v"), &[]),
            "3\t42\t1700000000000\t\tv\t\n",
        );
        check(
            &record(None, None, &[("flag", None)]),
            "3\t42\t1700000000000\t\t\tflag\n",
        );
    }

    #[test]
    fn custom_formats() {
        let r = record(Some("key"), None, &[]);
        let check = |format: &str, expect: &str| assert_eq!(render(format, &r), expect, "{format}");
        check("%t/%p@%o", "orders/3@42");
        check(r"%K %S\n", "3 -1\n");
        check("100%% %k", "100% key");
        check(r"a\\b\tc", "a\\b\tc");
        check("", "");
        for bad in ["%x", "%", r"\q", "ok\\"] {
            assert!(Format::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn start_positions() {
        let check = |input: &str, expect: Option<Start>| {
            assert_eq!(parse_start(input).ok(), expect, "{input}");
        };
        check("earliest", Some(Start::Earliest));
        check("beginning", Some(Start::Earliest));
        check("latest", Some(Start::Latest));
        check("end", Some(Start::Latest));
        check("0", Some(Start::Offset(0)));
        check("1234", Some(Start::Offset(1234)));
        check("@1700000000000", Some(Start::Timestamp(1_700_000_000_000)));
        check("-1", None);
        check("@", None);
        check("@-5", None);
        check("soon", None);
    }
}
