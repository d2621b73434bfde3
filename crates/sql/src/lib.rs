//! SQL over topics. Every topic is a table of the `lakestream` catalog's `public` schema:
//! `_partition`, `_offset`, `_timestamp`, `_key`, `_key_text`, `_headers`, `_value`, and the
//! value decoded by the topic's `value.format` (JSON, CSV, Avro or raw) with `_error` for what does
//! not decode. A scan covers the cold Parquet objects and the hot log as one table, from a high
//! watermark fixed at planning; filters on `_partition`, `_offset` and `_timestamp` are taken
//! over exactly, `ORDER BY _offset DESC LIMIT n` reads only the tail.
//!
//! **Architecture invariant:** the engine runs on its own runtime; the broker never waits on it.

pub mod avro;
pub mod catalog;
pub mod ctas;
pub mod depth;
pub mod engine;
pub mod format;
pub mod insert;
pub mod json_fast;
pub mod pg;
pub mod plan_size;
pub mod provider;
pub mod rows;
pub mod scan;
pub mod settings;
pub mod sqlstate;

pub use engine::{Engine, EngineConfig, QueryOutput};
