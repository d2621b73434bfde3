//! How fast JSON values decode: arrow-json's tape decoder as `format::decode` drove it before
//! `json_fast`, against `json_fast` with every column and with the benchmark query's columns.
//!
//! `cargo run --release -p lakestream-sql --example json_decode_speed [events]`; the ratio is what
//! matters (in the dev profile this crate is built at opt-level 0, its dependencies at 1).

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, ArrayBuilder, BinaryArray, BinaryBuilder};
use arrow::datatypes::SchemaRef;
use sql::format::{self, ValueFormat};
use sql::json_fast;

/// Rows per decoded run, as a scan hands them over (`rows::BATCH_ROWS`).
const RUN_ROWS: usize = 8192;

fn main() {
    let events: usize = std::env::args()
        .nth(1)
        .map(|text| text.parse().expect("events is a number"))
        .unwrap_or(1_000_000);
    let schema: SchemaRef = Arc::new(
        format::parse_schema("timestamp BIGINT, device_name STRING, metric DOUBLE").unwrap(),
    );
    let runs = generate(events);
    let query = [false, true, true];
    println!("{events} events in runs of {RUN_ROWS}; best of 5, thread CPU time");
    let arrow = best(|| {
        for run in &runs {
            std::hint::black_box(arrow_json(&schema, run));
        }
    });
    let fast_all = best(|| {
        for run in &runs {
            std::hint::black_box(json_fast::decode_projected(&schema, &[true; 3], run).unwrap());
        }
    });
    let fast_query = best(|| {
        for run in &runs {
            std::hint::black_box(json_fast::decode_projected(&schema, &query, run).unwrap());
        }
    });
    let format = ValueFormat::Json {
        schema: schema.clone(),
        strict: false,
    };
    let decode = best(|| {
        for run in &runs {
            std::hint::black_box(format::decode_wanted(&format, run, Some(&query)).unwrap());
        }
    });
    let report = |name: &str, time: Duration| {
        println!(
            "{name:<44} {:>8.1} ms {:>6.1} ns/event {:>5.2}x",
            time.as_secs_f64() * 1e3,
            time.as_secs_f64() * 1e9 / events as f64,
            arrow.as_secs_f64() / time.as_secs_f64()
        );
    };
    report("arrow-json (newline buffer, tape decoder)", arrow);
    report("json_fast, all 3 columns", fast_all);
    report("json_fast, device_name + metric", fast_query);
    report("format::decode_wanted, device_name + metric", decode);
}

/// Events like the benchmark's: `{"timestamp": ms, "device_name": "sensor-N", "metric": x}`.
fn generate(events: usize) -> Vec<BinaryArray> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut random = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut runs = Vec::new();
    let mut builder = BinaryBuilder::new();
    for event in 0..events {
        let value = format!(
            r#"{{"timestamp": {}, "device_name": "sensor-{}", "metric": {:.4}}}"#,
            1_763_942_400_000u64 + event as u64,
            random() % 1000,
            (random() % 1_000_000) as f64 / 10_000.0
        );
        builder.append_value(value);
        if builder.len() == RUN_ROWS {
            runs.push(builder.finish());
        }
    }
    if builder.len() > 0 {
        runs.push(builder.finish());
    }
    runs
}

/// What `format::decode` did for a run of good values before `json_fast`.
fn arrow_json(schema: &SchemaRef, values: &BinaryArray) -> arrow::array::RecordBatch {
    let rows = values.len();
    let mut buffer = Vec::with_capacity(values.get_buffer_memory_size() + rows * 2);
    for value in values.iter() {
        buffer.extend_from_slice(value.unwrap_or(b"{}"));
        buffer.push(b'\n');
    }
    let mut decoder = arrow::json::ReaderBuilder::new(Arc::clone(schema))
        .with_batch_size(rows + 1)
        .with_coerce_primitive(true)
        .build_decoder()
        .unwrap();
    decoder.decode(&buffer).unwrap();
    decoder.flush().unwrap().unwrap()
}

fn best(mut run: impl FnMut()) -> Duration {
    (0..5)
        .map(|_| {
            let start = cpu();
            run();
            cpu() - start
        })
        .min()
        .unwrap()
}

/// This thread's CPU time, so that other load on the machine counts little.
fn cpu() -> Duration {
    let mut time = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `time` is a valid timespec to write.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut time) };
    Duration::new(time.tv_sec as u64, time.tv_nsec as u32)
}
