//! `lakestream sql "SELECT ..."`: runs a statement on a running server (HTTP `POST /sql`) and
//! prints the rows as a table (or CSV / JSON) with the time it took.

use std::io::Write;
use std::time::Instant;

use anyhow::Context;

#[derive(clap::Args, Debug)]
pub struct SqlArgs {
    /// The statement; every topic is a table.
    pub statement: String,
    /// The server's HTTP endpoint.
    #[arg(
        long,
        env = "LAKESTREAM_HTTP_ADDR",
        default_value = "127.0.0.1:8080",
        value_name = "HOST:PORT"
    )]
    pub http_addr: String,
    /// table, csv or json.
    #[arg(long, default_value = "table")]
    pub format: String,
}

pub fn run(args: SqlArgs) -> anyhow::Result<()> {
    let wire = match args.format.as_str() {
        "table" => "arrow",
        "csv" => "csv",
        "json" => "json",
        other => anyhow::bail!("--format must be table, csv or json, not {other:?}"),
    };
    let url = format!("http://{}/sql?format={wire}", args.http_addr);
    let started = Instant::now();
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let mut response = agent
        .post(&url)
        .send(args.statement.as_bytes())
        .with_context(|| format!("POST {url} (is `lakestream serve` running? pass --http-addr)"))?;
    let status = response.status();
    let answer = response.body_mut().with_config().limit(u64::MAX);
    // CSV and JSON go to the output as they arrive, however large the result.
    if status.is_success() && wire != "arrow" {
        let mut stdout = std::io::stdout().lock();
        std::io::copy(&mut answer.reader(), &mut stdout)
            .with_context(|| format!("reading the answer of {url}"))?;
        if wire == "json" {
            writeln!(stdout)?;
        }
        return Ok(());
    }
    let body = answer
        .read_to_vec()
        .with_context(|| format!("reading the answer of {url}"))?;
    if !status.is_success() {
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|value| {
                value
                    .get("error")
                    .and_then(|error| error.as_str())
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        anyhow::bail!("{message}");
    }
    let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(body), None)
        .context("the server's answer is not an Arrow stream")?;
    let batches = reader
        .collect::<Result<Vec<_>, _>>()
        .context("the server's answer is not an Arrow stream")?;
    let rows: usize = batches.iter().map(|batch| batch.num_rows()).sum();
    if !batches.is_empty() {
        println!("{}", arrow::util::pretty::pretty_format_batches(&batches)?);
    }
    println!(
        "({rows} row{}, {:.1} ms)",
        if rows == 1 { "" } else { "s" },
        started.elapsed().as_secs_f64() * 1000.0
    );
    Ok(())
}
