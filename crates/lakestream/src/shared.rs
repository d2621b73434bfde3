//! What the people-facing commands share: where the broker is, a runtime to talk to it, and
//! turning errors into messages with hints.

use anyhow::anyhow;
use client::{Client, ResponseError};

#[derive(clap::Args, Debug, Clone, PartialEq)]
pub struct BootstrapArgs {
    /// The broker to talk to.
    #[arg(
        long,
        global = true,
        env = "LAKESTREAM_BOOTSTRAP",
        default_value = "127.0.0.1:9092",
        value_name = "HOST:PORT"
    )]
    pub bootstrap: String,
}

/// A single-threaded runtime: these commands hold one connection and do one thing at a time.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

pub async fn connect(args: &BootstrapArgs) -> anyhow::Result<Client> {
    Client::connect(&args.bootstrap).await.map_err(|error| {
        anyhow!(
            "{error}\nhint: is `lakestream serve` running there? \
             Point at a broker with --bootstrap HOST:PORT or LAKESTREAM_BOOTSTRAP."
        )
    })
}

/// Adds a hint to the client errors people can do something about.
pub fn explain(error: client::Error, topic: &str) -> anyhow::Error {
    let hint = match error.kafka_error() {
        Some(ResponseError::UnknownTopicOrPartition) => format!(
            "hint: see the topics with `lakestream topics list`; \
             create this one with `lakestream topics create {topic} --partitions N`."
        ),
        Some(ResponseError::TopicAlreadyExists) => {
            format!("hint: see it with `lakestream topics describe {topic}`.")
        }
        Some(ResponseError::OffsetOutOfRange) => {
            "hint: start from an offset in range with --from earliest or --from latest.".to_owned()
        }
        _ => return error.into(),
    };
    anyhow!("{error}\n{hint}")
}

/// Parses `KEY=VALUE` (split at the first `=`; the value may be empty, the key may not).
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

/// Left-aligned columns, two spaces apart, no trailing spaces.
pub fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            if c + 1 < row.len() {
                let pad = widths[c] - cell.chars().count();
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values() {
        let check = |input: &str, expect: Result<(&str, &str), ()>| {
            let got = parse_key_value(input);
            match expect {
                Ok((k, v)) => assert_eq!(got, Ok((k.to_owned(), v.to_owned())), "{input}"),
                Err(()) => assert!(got.is_err(), "{input}: {got:?}"),
            }
        };
        check("retention.ms=1000", Ok(("retention.ms", "1000")));
        check("a=b=c", Ok(("a", "b=c")));
        check("a=", Ok(("a", "")));
        check("=b", Err(()));
        check("novalue", Err(()));
    }

    #[test]
    fn tables_align() {
        let rows = vec![
            vec!["Partition".into(), "Leader".into(), "End".into()],
            vec!["0".into(), "0".into(), "12345".into()],
            vec!["10".into(), "".into(), "".into()],
        ];
        assert_eq!(
            table(&rows),
            "Partition  Leader  End\n\
             0          0       12345\n\
             10\n"
        );
    }
}
