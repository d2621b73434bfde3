//! The HTTP endpoint: `GET /metrics` (Prometheus text) and `GET /v1/topics/{name}` (a topic's
//! partitions with their hot and cold ranges, as JSON).

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use broker::Broker;
use serde::Serialize;

#[derive(Clone)]
struct App {
    broker: Arc<Broker>,
    engine: Arc<sql::Engine>,
}

/// Largest SQL text accepted.
const SQL_MAX_BYTES: usize = 1 << 20;

pub async fn serve(
    broker: Arc<Broker>,
    engine: Arc<sql::Engine>,
    listener: tokio::net::TcpListener,
) {
    let app = axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/v1/topics/{name}", get(topic))
        .route("/sql", axum::routing::post(run_sql))
        .layer(axum::extract::DefaultBodyLimit::max(SQL_MAX_BYTES))
        .with_state(App { broker, engine });
    // Answers go out as soon as they are written: a streamed answer's last chunk would otherwise
    // wait for the client's delayed ACK (40 ms) on a kept-alive connection.
    let listener = axum::serve::ListenerExt::tap_io(listener, |stream| {
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "TCP_NODELAY could not be set on an HTTP connection");
        }
    });
    if let Err(error) = axum::serve(listener, app).await {
        tracing::error!(%error, "the HTTP endpoint stopped");
    }
}

/// One partition as `topics describe` shows it.
#[derive(Serialize, serde::Deserialize, Debug)]
pub struct PartitionInfo {
    pub partition: i32,
    pub log_start_offset: i64,
    pub local_start_offset: i64,
    pub high_watermark: i64,
    pub local_bytes: u64,
    pub cold: ColdInfo,
}

#[derive(Serialize, serde::Deserialize, Debug)]
pub struct ColdInfo {
    /// False until the partition's manifest has been read from the store.
    pub loaded: bool,
    pub start_offset: i64,
    /// The first offset not in the cold tier.
    pub end_offset: i64,
    pub objects: usize,
    pub bytes: u64,
    pub log_bytes: u64,
    /// Objects waiting for a rewrite that adds the declared schema's typed columns.
    #[serde(default)]
    pub rewrite_pending: usize,
}

#[derive(Serialize, serde::Deserialize, Debug)]
pub struct TopicInfo {
    pub name: String,
    pub id: String,
    pub partitions: Vec<PartitionInfo>,
}

pub fn topic_info(broker: &broker::Broker, topic: &broker::topics::Topic) -> TopicInfo {
    let partitions = topic
        .partitions()
        .iter()
        .map(|partition| {
            let manifest = partition.cold_manifest();
            let local_start_offset = partition.local_start_offset();
            let cold = match &manifest {
                Some(manifest) => ColdInfo {
                    loaded: true,
                    start_offset: manifest.start_offset().unwrap_or(local_start_offset),
                    end_offset: manifest.next_offset().unwrap_or(local_start_offset),
                    objects: manifest.objects.len(),
                    bytes: manifest.size_bytes(),
                    log_bytes: manifest.log_bytes(),
                    rewrite_pending: broker
                        .tiering
                        .as_ref()
                        .map_or(0, |tiering| tiering.rewrite_pending(topic, manifest)),
                },
                None => ColdInfo {
                    loaded: false,
                    start_offset: local_start_offset,
                    end_offset: local_start_offset,
                    objects: 0,
                    bytes: 0,
                    log_bytes: 0,
                    rewrite_pending: 0,
                },
            };
            PartitionInfo {
                partition: partition.index,
                log_start_offset: partition.log_start_offset(),
                local_start_offset,
                high_watermark: partition.high_watermark(),
                local_bytes: partition.local_bytes(),
                cold,
            }
        })
        .collect();
    TopicInfo {
        name: topic.name.to_string(),
        id: topic.id.to_string(),
        partitions,
    }
}

async fn topic(State(app): State<App>, Path(name): Path<String>) -> Response {
    match app.broker.topics.get(&name) {
        Some(topic) => Json(topic_info(&app.broker, &topic)).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            format!("topic {name} does not exist\n"),
        )
            .into_response(),
    }
}

async fn metrics(State(app): State<App>) -> Response {
    let broker = &app.broker;
    let mut text = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: f64| {
        let _ = writeln!(
            text,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    };
    let topics = broker.topics.all();
    let partitions: usize = topics.iter().map(|topic| topic.partitions().len()).sum();
    metric(
        "lakestream_topics",
        "gauge",
        "Topics, the internal one included.",
        topics.len() as f64,
    );
    metric(
        "lakestream_partitions",
        "gauge",
        "Partitions of every topic.",
        partitions as f64,
    );
    let local_bytes: u64 = topics
        .iter()
        .flat_map(|topic| topic.partitions())
        .map(|partition| partition.local_bytes())
        .sum();
    metric(
        "lakestream_local_log_bytes",
        "gauge",
        "Bytes of log on local disk.",
        local_bytes as f64,
    );
    if let Some(tiering) = &broker.tiering {
        let m = &tiering.metrics;
        let cache = &tiering.cache.stats;
        let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed) as f64;
        let tier = [
            (
                "lakestream_tier_uploaded_objects_total",
                "counter",
                "Parquet objects written to the cold store.",
                load(&m.uploaded_objects),
            ),
            (
                "lakestream_tier_uploaded_bytes_total",
                "counter",
                "Bytes of log turned into Parquet objects.",
                load(&m.uploaded_log_bytes),
            ),
            (
                "lakestream_tier_uploaded_object_bytes_total",
                "counter",
                "Bytes of Parquet written to the cold store.",
                load(&m.uploaded_object_bytes),
            ),
            (
                "lakestream_tier_upload_errors_total",
                "counter",
                "Failed uploads (the segments stay local and are retried).",
                load(&m.upload_errors),
            ),
            (
                "lakestream_tier_manifest_errors_total",
                "counter",
                "Failed manifest loads.",
                load(&m.manifest_errors),
            ),
            (
                "lakestream_tier_pending_segments",
                "gauge",
                "Sealed segments waiting for upload.",
                m.pending_segments.load(Ordering::Relaxed) as f64,
            ),
            (
                "lakestream_tier_deleted_local_segments_total",
                "counter",
                "Uploaded local segments deleted after leaving the hot window.",
                load(&m.deleted_local_segments),
            ),
            (
                "lakestream_tier_deleted_objects_total",
                "counter",
                "Cold objects deleted by retention.",
                load(&m.deleted_objects),
            ),
            (
                "lakestream_tier_rewrites_total",
                "counter",
                "Cold objects rewritten to gain their topic's declared typed columns.",
                load(&m.rewrites),
            ),
            (
                "lakestream_tier_rewrite_errors_total",
                "counter",
                "Failed rewrites (the old object stays in use and is retried).",
                load(&m.rewrite_errors),
            ),
            (
                "lakestream_tier_rewrite_pending_objects",
                "gauge",
                "Cold objects lacking their topic's declared typed columns.",
                m.rewrite_pending_objects.load(Ordering::Relaxed) as f64,
            ),
            (
                "lakestream_tier_rewrite_retired_objects",
                "gauge",
                "Objects replaced by rewrites, deleted once the grace period is over.",
                m.retired_objects.load(Ordering::Relaxed) as f64,
            ),
            (
                "lakestream_tier_cache_hits_total",
                "counter",
                "Cold reads served from the cache.",
                load(&cache.hits),
            ),
            (
                "lakestream_tier_cache_misses_total",
                "counter",
                "Cold objects loaded from the store (a read's miss or a prefetch).",
                load(&cache.misses),
            ),
            (
                "lakestream_tier_fetched_bytes_total",
                "counter",
                "Bytes of Parquet read from the cold store.",
                load(&cache.fetched_bytes),
            ),
            (
                "lakestream_tier_read_errors_total",
                "counter",
                "Cold objects that could not be read (missing, corrupt or store down).",
                load(&cache.errors),
            ),
            (
                "lakestream_tier_cache_bytes",
                "gauge",
                "Bytes of cold data in the cache.",
                tiering.cache.cached_bytes() as f64,
            ),
        ];
        for (name, kind, help, value) in tier {
            metric(name, kind, help, value);
        }
    }

    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

#[derive(serde::Deserialize)]
struct SqlParams {
    /// json (default), csv or arrow (Arrow IPC stream).
    format: Option<String>,
}

/// Encoded bytes of a result gathered before the answer starts. A query that fails within them
/// gets a 400 with its error; one that fails later has its transfer cut short (and the error
/// logged), so that a client never takes part of a result for all of it.
const SQL_FIRST_PIECE_BYTES: usize = 1 << 20;

/// Encoded bytes per later piece of a result, and pieces waiting for a slow client: the server
/// holds at most a few MiB of a result however large it is, and stops running the query while
/// the client does not read.
const SQL_PIECE_BYTES: usize = 256 << 10;
const SQL_PIECES_AHEAD: usize = 2;

/// Rows encoded at a time: a piece exceeds its size by at most this many rows' text.
const SQL_SLICE_ROWS: usize = 1024;

/// What the SQL runtime hands the answer: encoded rows (the last of them), or why the query
/// failed.
enum Piece {
    Bytes(bytes::Bytes),
    Last(bytes::Bytes),
    Failed(String),
}

/// The pieces after the first, up to the last. An error ends the stream with an error, which
/// makes the server cut the transfer short; so does a query task that ends before its last
/// piece (it panicked), so that the answer does not look whole.
fn rest_of_answer(
    receiver: tokio::sync::mpsc::Receiver<Piece>,
) -> impl futures::Stream<Item = Result<bytes::Bytes, std::io::Error>> {
    futures::stream::unfold(Some(receiver), |receiver| async move {
        let mut receiver = receiver?;
        let (item, next) = match receiver.recv().await {
            Some(Piece::Bytes(bytes)) => (Ok(bytes), Some(receiver)),
            Some(Piece::Last(bytes)) => (Ok(bytes), None),
            Some(Piece::Failed(message)) => (Err(std::io::Error::other(message)), None),
            None => (
                Err(std::io::Error::other(
                    "the query stopped before its last rows",
                )),
                None,
            ),
        };
        Some((item, next))
    })
}

/// `POST /sql` with the statement as the body: the rows as JSON
/// (`{"columns": [{"name", "type"}], "rows": [{...}], "row_count", "elapsed_ms"}`), CSV with a
/// header line, or an Arrow IPC stream. A bad statement answers 400 with `{"error": ...}`.
///
/// The answer streams: the query is planned, run and encoded on the SQL runtime, and its bytes
/// go out as they come, through a bounded queue, so a large result never sits in memory whole
/// and a slow client holds the query back. A client that disconnects cancels its query.
async fn run_sql(
    State(app): State<App>,
    axum::extract::Query(params): axum::extract::Query<SqlParams>,
    body: String,
) -> Response {
    let format = params.format.unwrap_or_else(|| "json".into());
    let content_type = match format.as_str() {
        "json" => "application/json",
        "csv" => "text/csv",
        "arrow" => "application/vnd.apache.arrow.stream",
        _ => {
            return sql_error(
                StatusCode::BAD_REQUEST,
                format!("format must be json, csv or arrow, not {format:?}"),
            );
        }
    };
    let (sender, mut receiver) = tokio::sync::mpsc::channel(SQL_PIECES_AHEAD);
    let engine = Arc::clone(&app.engine);
    app.engine
        .runtime()
        .spawn(answer_sql(engine, body, format, sender));
    // Dropping this handler (the client left) drops the receiver, which stops the query.
    match receiver.recv().await {
        None => sql_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the query stopped without an answer".into(),
        ),
        Some(Piece::Failed(message)) => sql_error(StatusCode::BAD_REQUEST, message),
        // The whole answer at once: sent with its length, in one write.
        Some(Piece::Last(whole)) => ([(header::CONTENT_TYPE, content_type)], whole).into_response(),
        Some(Piece::Bytes(first)) => {
            let body = futures::StreamExt::chain(
                futures::stream::once(async move { Ok::<_, std::io::Error>(first) }),
                rest_of_answer(receiver),
            );
            (
                [(header::CONTENT_TYPE, content_type)],
                axum::body::Body::from_stream(body),
            )
                .into_response()
        }
    }
}

/// Runs `sql` (on the SQL runtime) and sends its answer in `format` to `sender` in pieces; stops
/// when the receiver is gone.
async fn answer_sql(
    engine: Arc<sql::Engine>,
    sql: String,
    format: String,
    sender: tokio::sync::mpsc::Sender<Piece>,
) {
    let started = std::time::Instant::now();
    let stream = tokio::select! {
        () = sender.closed() => return,
        stream = engine.execute_stream(&sql) => stream,
    };
    let fail = |message: String| {
        let sender = sender.clone();
        async move {
            let _ = sender.send(Piece::Failed(message)).await;
        }
    };
    let mut stream = match stream {
        Ok(stream) => stream,
        Err(error) => return fail(error.to_string()).await,
    };
    let mut encoder = match ResultEncoder::new(&format, stream.schema()) {
        Ok(encoder) => encoder,
        Err(error) => return fail(error.to_string()).await,
    };
    let mut rows = 0;
    let mut answering = false;
    loop {
        let next = tokio::select! {
            () = sender.closed() => return,
            next = futures::StreamExt::next(&mut stream) => next,
        };
        let batch = match next {
            None => break,
            Some(Ok(batch)) => batch,
            Some(Err(error)) => {
                if answering {
                    tracing::warn!(%error, "an SQL query failed after its answer started; the transfer is cut short");
                }
                return fail(error.to_string()).await;
            }
        };
        rows += batch.num_rows();
        // A batch is encoded a slice at a time, so that a piece stays near its size even when
        // a batch holds many MiB of text.
        let mut at = 0;
        while at < batch.num_rows() {
            let slice = batch.slice(at, SQL_SLICE_ROWS.min(batch.num_rows() - at));
            at += slice.num_rows();
            if let Err(error) = encoder.write(&slice) {
                return fail(error.to_string()).await;
            }
            let due = if answering {
                SQL_PIECE_BYTES
            } else {
                SQL_FIRST_PIECE_BYTES
            };
            if encoder.pending() >= due {
                if sender.send(Piece::Bytes(encoder.take())).await.is_err() {
                    return;
                }
                answering = true;
            }
        }
    }
    match encoder.finish(rows, started.elapsed()) {
        Ok(()) => {
            let _ = sender.send(Piece::Last(encoder.take())).await;
        }
        Err(error) => fail(error.to_string()).await,
    }
}

fn sql_error(status: StatusCode, message: String) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

/// A result's rows in an answer's format, encoded batch by batch; `take` hands out what is
/// encoded so far.
enum ResultEncoder {
    /// `{"columns": [...], "rows": [...], "row_count": N, "elapsed_ms": T}`: the rows writer's
    /// buffer also holds the text around the rows.
    Json(arrow::json::ArrayWriter<Vec<u8>>),
    /// A header line, then a line per row; nested values as text.
    Csv {
        schema: arrow::datatypes::SchemaRef,
        header_written: bool,
        out: Vec<u8>,
    },
    /// An Arrow IPC stream.
    Arrow(arrow::ipc::writer::StreamWriter<Vec<u8>>),
}

impl ResultEncoder {
    fn new(
        format: &str,
        schema: arrow::datatypes::SchemaRef,
    ) -> Result<ResultEncoder, arrow::error::ArrowError> {
        Ok(match format {
            "csv" => ResultEncoder::Csv {
                schema,
                header_written: false,
                out: Vec::new(),
            },
            "arrow" => ResultEncoder::Arrow(arrow::ipc::writer::StreamWriter::try_new(
                Vec::new(),
                &schema,
            )?),
            _ => {
                let columns: Vec<serde_json::Value> = schema
                    .fields()
                    .iter()
                    .map(|field| serde_json::json!({ "name": field.name(), "type": field.data_type().to_string() }))
                    .collect();
                let mut out = b"{\"columns\":".to_vec();
                serde_json::to_writer(&mut out, &columns).expect("JSON serializes");
                out.extend_from_slice(b",\"rows\":");
                ResultEncoder::Json(
                    arrow::json::WriterBuilder::new()
                        .with_explicit_nulls(true)
                        .build::<_, arrow::json::writer::JsonArray>(out),
                )
            }
        })
    }

    fn write(&mut self, batch: &arrow::array::RecordBatch) -> Result<(), arrow::error::ArrowError> {
        match self {
            ResultEncoder::Json(writer) => writer.write(batch)?,
            ResultEncoder::Csv {
                header_written,
                out,
                ..
            } => {
                arrow::csv::WriterBuilder::new()
                    .with_header(!*header_written)
                    .build(&mut *out)
                    .write(&flat(batch)?)?;
                *header_written = true;
            }
            ResultEncoder::Arrow(writer) => writer.write(batch)?,
        }
        Ok(())
    }

    /// Ends the answer (`rows` rows, taking `elapsed`).
    fn finish(
        &mut self,
        rows: usize,
        elapsed: std::time::Duration,
    ) -> Result<(), arrow::error::ArrowError> {
        match self {
            ResultEncoder::Json(writer) => {
                writer.finish()?;
                let end = serde_json::json!({
                    "row_count": rows,
                    "elapsed_ms": elapsed.as_secs_f64() * 1000.0,
                });
                // `{"row_count": ..., ...}` without its opening brace, after the rows.
                let end = serde_json::to_vec(&end).expect("JSON serializes");
                let out = writer.get_mut();
                out.push(b',');
                out.extend_from_slice(&end[1..]);
            }
            ResultEncoder::Csv {
                schema,
                header_written,
                ..
            } => {
                if !*header_written {
                    // No row: the header line alone.
                    let empty = arrow::array::RecordBatch::new_empty(Arc::clone(schema));
                    self.write(&empty)?;
                }
            }
            ResultEncoder::Arrow(writer) => writer.finish()?,
        }
        Ok(())
    }

    /// Bytes encoded and not yet taken.
    fn pending(&self) -> usize {
        match self {
            ResultEncoder::Json(writer) => writer.get_ref().len(),
            ResultEncoder::Csv { out, .. } => out.len(),
            ResultEncoder::Arrow(writer) => writer.get_ref().len(),
        }
    }

    fn take(&mut self) -> bytes::Bytes {
        let out = match self {
            ResultEncoder::Json(writer) => writer.get_mut(),
            ResultEncoder::Csv { out, .. } => out,
            ResultEncoder::Arrow(writer) => writer.get_mut(),
        };
        bytes::Bytes::from(std::mem::take(out))
    }
}

/// The batch with nested columns (lists, structs, maps: `_headers`) shown as text, for CSV.
fn flat(
    batch: &arrow::array::RecordBatch,
) -> Result<arrow::array::RecordBatch, arrow::error::ArrowError> {
    use arrow::array::Array;
    use arrow::datatypes::{Field, Schema};
    if !batch
        .schema()
        .fields()
        .iter()
        .any(|field| field.data_type().is_nested())
    {
        return Ok(batch.clone());
    }
    let options = arrow::util::display::FormatOptions::default();
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        if field.data_type().is_nested() {
            let formatter =
                arrow::util::display::ArrayFormatter::try_new(column.as_ref(), &options)?;
            let text: arrow::array::StringArray = (0..column.len())
                .map(|row| (!column.is_null(row)).then(|| formatter.value(row).to_string()))
                .collect();
            fields.push(Field::new(
                field.name(),
                arrow::datatypes::DataType::Utf8,
                true,
            ));
            columns.push(Arc::new(text) as arrow::array::ArrayRef);
        } else {
            fields.push(field.as_ref().clone());
            columns.push(Arc::clone(column));
        }
    }
    arrow::array::RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
}

#[cfg(test)]
mod answer_tests {
    use futures::StreamExt;

    use super::*;

    /// An answer ends with its last piece, or with an error: never quietly cut short.
    #[tokio::test]
    async fn an_answer_whose_query_stops_early_ends_with_an_error() {
        let (sender, receiver) = tokio::sync::mpsc::channel(4);
        sender.send(Piece::Bytes("a".into())).await.unwrap();
        sender.send(Piece::Last("b".into())).await.unwrap();
        sender.send(Piece::Bytes("after".into())).await.unwrap();
        let whole: Vec<_> = rest_of_answer(receiver).collect().await;
        assert_eq!(whole.len(), 2);
        assert!(whole.iter().all(Result::is_ok));

        let (sender, receiver) = tokio::sync::mpsc::channel(4);
        sender.send(Piece::Bytes("a".into())).await.unwrap();
        drop(sender);
        let cut: Vec<_> = rest_of_answer(receiver).collect().await;
        assert_eq!(cut.len(), 2);
        assert!(cut[0].is_ok() && cut[1].is_err(), "{cut:?}");
    }
}
