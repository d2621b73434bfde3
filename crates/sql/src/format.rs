//! How a topic's record values become columns: the topic config `value.format` (`raw`, `json`,
//! `csv`, `avro`) with an optional declared `value.schema` (required for Avro: see `avro`), or
//! for JSON a schema inferred from a sample.
//!
//! Decoding is schema on read and forgiving by default: a value that does not decode gives NULL
//! columns and an `_error` text; with `value.decode.strict=true` it fails the query instead.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BinaryArray, RecordBatch, StringBuilder, new_null_array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;

use crate::avro::{AvroFormat, Framing};
use crate::rows::ValueSpans;

/// The column that says why a value did not decode.
pub const ERROR_COLUMN: &str = "_error";

/// How values decode.
#[derive(Debug, Clone, PartialEq)]
pub enum ValueFormat {
    /// `_value` bytes only.
    Raw,
    /// One JSON object per value; `schema` are its columns.
    Json { schema: SchemaRef, strict: bool },
    /// One CSV line per value (no header); `schema` are its fields in order.
    Csv { schema: SchemaRef, strict: bool },
    /// One Avro datum per value, plain or Confluent-framed.
    Avro {
        avro: Arc<crate::avro::AvroFormat>,
        strict: bool,
    },
}

impl ValueFormat {
    /// The value's columns (not counting `_value` and `_error`).
    pub fn fields(&self) -> Vec<Arc<Field>> {
        match self {
            ValueFormat::Raw => Vec::new(),
            ValueFormat::Json { schema, .. } | ValueFormat::Csv { schema, .. } => {
                schema.fields().iter().cloned().collect()
            }
            ValueFormat::Avro { avro, .. } => avro.columns().fields().iter().cloned().collect(),
        }
    }

    /// The same format, never strict (uploads keep a bad value's bytes with NULL fields).
    pub fn lenient(&self) -> ValueFormat {
        match self {
            ValueFormat::Raw => ValueFormat::Raw,
            ValueFormat::Json { schema, .. } => ValueFormat::Json {
                schema: schema.clone(),
                strict: false,
            },
            ValueFormat::Csv { schema, .. } => ValueFormat::Csv {
                schema: schema.clone(),
                strict: false,
            },
            ValueFormat::Avro { avro, .. } => ValueFormat::Avro {
                avro: avro.clone(),
                strict: false,
            },
        }
    }

    pub fn decodes(&self) -> bool {
        !matches!(self, ValueFormat::Raw)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error(
        "value.schema: {0} (write it as `name TYPE, ...` with types STRING, BIGINT, INT, DOUBLE, FLOAT, BOOLEAN, TIMESTAMP)"
    )]
    BadSchema(String),
    #[error(
        "value.schema is not a usable Avro schema: {0} (for value.format=avro, write the record schema as JSON, e.g. {{\"type\": \"record\", \"name\": \"Reading\", \"fields\": [{{\"name\": \"metric\", \"type\": \"double\"}}]}})"
    )]
    BadAvroSchema(String),
    #[error(
        "value.format=avro needs value.schema: the Avro record schema (JSON) the values were written with"
    )]
    AvroWithoutSchema,
    #[error("inferring the JSON schema of topic {topic}: {reason}")]
    Inference { topic: String, reason: String },
}

/// Parses a declared schema: `name TYPE, name TYPE, ...`.
pub fn parse_schema(text: &str) -> Result<Schema, FormatError> {
    let mut fields = Vec::new();
    for (at, part) in text.split(',').enumerate() {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let mut words = part.split_whitespace();
        let (Some(name), Some(kind), None) = (words.next(), words.next(), words.next()) else {
            return Err(FormatError::BadSchema(format!(
                "column {} `{part}` is not `name TYPE`",
                at + 1
            )));
        };
        let data_type = match kind.to_ascii_uppercase().as_str() {
            "STRING" | "VARCHAR" | "TEXT" => DataType::Utf8,
            "BIGINT" | "LONG" | "INT64" => DataType::Int64,
            "INT" | "INTEGER" | "INT32" => DataType::Int32,
            "DOUBLE" | "FLOAT64" => DataType::Float64,
            "FLOAT" | "REAL" | "FLOAT32" => DataType::Float32,
            "BOOLEAN" | "BOOL" => DataType::Boolean,
            "TIMESTAMP" => DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            other => {
                return Err(FormatError::BadSchema(format!(
                    "column `{name}` has unknown type {other}"
                )));
            }
        };
        if name.starts_with('_') {
            return Err(FormatError::BadSchema(format!(
                "column `{name}`: names starting with `_` are the table's own columns"
            )));
        }
        if fields.iter().any(|field: &Field| field.name() == name) {
            return Err(FormatError::BadSchema(format!(
                "column `{name}` appears twice"
            )));
        }
        fields.push(Field::new(name, data_type, true));
    }
    if fields.is_empty() {
        return Err(FormatError::BadSchema("no columns".into()));
    }
    Ok(Schema::new(fields))
}

/// The Avro format a topic's configs declare: `value.schema` (required), `value.avro.framing`
/// and `value.avro.schema.id`.
pub fn avro_of(config: &broker::topic_config::TopicConfig) -> Result<AvroFormat, FormatError> {
    let declared = config.value_of("value.schema").trim();
    if declared.is_empty() {
        return Err(FormatError::AvroWithoutSchema);
    }
    let framing = Framing::from_config(config.value_of("value.avro.framing"));
    let schema_id = config
        .value_of("value.avro.schema.id")
        .trim()
        .parse::<i64>()
        .ok()
        .and_then(|id| u32::try_from(id).ok());
    AvroFormat::new(declared, framing, schema_id)
}

/// Checks that a topic's value configs make a format that decodes: a declared schema that
/// parses, and for Avro a usable record schema. The broker asks this when topics are created
/// and their configs altered, so a mistake is an INVALID_CONFIG error then, not at query time.
pub fn check_config(config: &broker::topic_config::TopicConfig) -> Result<(), FormatError> {
    let declared = config.value_of("value.schema").trim();
    match config.value_of("value.format") {
        "json" | "csv" if !declared.is_empty() => parse_schema(declared).map(drop),
        "avro" => avro_of(config).map(drop),
        _ => Ok(()),
    }
}

/// Infers a JSON schema from sample values (objects only; others are skipped). Fields come out
/// sorted by name, every one nullable; names starting with `_` are dropped (they would shadow
/// the table's own columns).
pub fn infer_json_schema<'a>(values: impl Iterator<Item = &'a [u8]>) -> Schema {
    let parsed =
        values.filter_map(
            |value| match serde_json::from_slice::<serde_json::Value>(value) {
                Ok(object @ serde_json::Value::Object(_)) => Some(Ok(object)),
                _ => None,
            },
        );
    let schema = arrow::json::reader::infer_json_schema_from_iterator(parsed)
        .unwrap_or_else(|_| Schema::empty());
    let mut fields: Vec<Field> = schema
        .fields()
        .iter()
        .filter(|field| !field.name().starts_with('_'))
        .map(|field| field.as_ref().clone().with_nullable(true))
        .collect();
    fields.sort_by(|a, b| a.name().cmp(b.name()));
    Schema::new(fields)
}

/// Decoded value columns for a run of values, plus the `_error` column.
pub struct Decoded {
    pub columns: Vec<ArrayRef>,
    pub errors: ArrayRef,
}

/// Decodes `values` (one per row; NULL for a tombstone) by `format`. A row that does not decode
/// gets NULL columns and an error text, unless the format is strict, which fails.
pub fn decode(format: &ValueFormat, values: &BinaryArray) -> Result<Decoded, ArrowError> {
    decode_wanted(format, values, None)
}

/// [`decode`] for a projection: `wanted` says per value field whether its column is needed
/// (`None`: all are). Columns not wanted may come back all NULL; `_error` is always right.
pub fn decode_wanted(
    format: &ValueFormat,
    values: &BinaryArray,
    wanted: Option<&[bool]>,
) -> Result<Decoded, ArrowError> {
    let rows = values.len();
    let (schema, strict) = match format {
        ValueFormat::Raw => {
            return Ok(Decoded {
                columns: Vec::new(),
                errors: new_null_array(&DataType::Utf8, rows),
            });
        }
        ValueFormat::Json { schema, strict } | ValueFormat::Csv { schema, strict } => {
            (schema, *strict)
        }
        ValueFormat::Avro { avro, strict } => return avro.decode(values, *strict),
    };
    if matches!(format, ValueFormat::Json { .. })
        && let Some(decoded) = decode_json_flat(schema, values, wanted)
    {
        return Ok(decoded);
    }
    decode_exact(
        schema,
        matches!(format, ValueFormat::Csv { .. }),
        strict,
        values,
    )
}

/// [`decode_wanted`] of values wherever they lie (see [`ValueSpans`]), gathered first, for the
/// runs that `json_fast::RowDecoder` did not take as they were walked: JSON goes straight to
/// the exact decoder.
pub fn decode_spans(
    format: &ValueFormat,
    values: &ValueSpans,
    wanted: Option<&[bool]>,
) -> Result<Decoded, ArrowError> {
    match format {
        ValueFormat::Json { schema, strict } => {
            decode_exact(schema, false, *strict, &values.to_binary())
        }
        _ => decode_wanted(format, &values.to_binary(), wanted),
    }
}

/// Decodes text values (JSON, or CSV when `csv`) with arrow's decoders; a value that does not
/// decode gets NULL columns and its error text, or fails the whole run when `strict`.
fn decode_exact(
    schema: &SchemaRef,
    csv: bool,
    strict: bool,
    values: &BinaryArray,
) -> Result<Decoded, ArrowError> {
    let rows = values.len();
    // The fast path: every value at once, one per line. Only when each value is one whole
    // record: a truncated value would run on into the next line, and the records would no
    // longer line up with the values even when their count does.
    if (0..rows).all(|row| values.is_null(row) || one_record(values.value(row), csv))
        && let Ok(batch) = decode_all(schema, csv, values, None)
        && batch.num_rows() == rows
    {
        return Ok(Decoded {
            columns: batch.columns().to_vec(),
            errors: new_null_array(&DataType::Utf8, rows),
        });
    }
    // Some value is bad: find which, one by one, then decode the good ones with the bad ones
    // blanked.
    let mut bad = vec![false; rows];
    let mut errors = StringBuilder::new();
    // What is wrong with a value: the text for `_error`, and the error of a strict topic.
    let text_and =
        |text: String, error: fn(String) -> ArrowError| Some((text.clone(), error(text)));
    for (row, flag) in bad.iter_mut().enumerate() {
        if values.is_null(row) {
            errors.append_null();
            continue;
        }
        let value = values.value(row);
        let problem = if csv && !one_csv_line(value) {
            // The CSV decoder takes an unclosed quote to the end of the value as if it were
            // closed, and so would it the next line in.
            text_and(
                "the value is not one CSV line: a quote is not closed, or a line break is outside quotes".into(),
                ArrowError::CsvError,
            )
        } else if !csv && json_brackets(value.trim_ascii()) == Brackets::TooDeep {
            text_and(
                format!("the value nests deeper than {JSON_DEPTH_MAX} levels"),
                ArrowError::JsonError,
            )
        } else {
            match decode_all(schema, csv, &values.slice(row, 1), None) {
                Ok(batch) if batch.num_rows() == 1 => None,
                Ok(batch) => text_and(
                    format!("the value holds {} records, not one", batch.num_rows()),
                    ArrowError::JsonError,
                ),
                Err(error) => Some((error.to_string(), error)),
            }
        };
        match problem {
            None => errors.append_null(),
            Some((_, error)) if strict => return Err(error),
            Some((text, _)) => {
                *flag = true;
                errors.append_value(text);
            }
        }
    }
    let batch = decode_all(schema, csv, values, Some(&bad))?;
    Ok(Decoded {
        columns: batch.columns().to_vec(),
        errors: Arc::new(errors.finish()),
    })
}

/// Flat JSON objects of plain types, decoded in one pass by `json_fast` exactly as
/// [`decode_all`] would; `None` when some value is not of that shape.
fn decode_json_flat(
    schema: &SchemaRef,
    values: &BinaryArray,
    wanted: Option<&[bool]>,
) -> Option<Decoded> {
    let all = vec![true; schema.fields().len()];
    let columns = crate::json_fast::decode_projected(schema, wanted.unwrap_or(&all), values)?;
    Some(flat_columns(schema, columns, values.len()))
}

/// What `json_fast` gave, with all-NULL columns for the fields not wanted.
pub(crate) fn flat_columns(
    schema: &SchemaRef,
    columns: Vec<Option<ArrayRef>>,
    rows: usize,
) -> Decoded {
    let columns = columns
        .into_iter()
        .zip(schema.fields())
        .map(|(column, field)| column.unwrap_or_else(|| new_null_array(field.data_type(), rows)))
        .collect();
    Decoded {
        columns,
        errors: new_null_array(&DataType::Utf8, rows),
    }
}

/// Deepest nesting of arrays and objects a JSON value may have. Arrow's JSON decoder turns
/// nested values into text recursively, so a deeper value (one record can be a megabyte of
/// brackets) would overflow the stack of the thread decoding it: it is a bad record instead.
pub const JSON_DEPTH_MAX: usize = 1000;

/// Whether `value` is, as far as its brackets and quotes show, exactly one record that ends
/// within it: one JSON object with nothing after it and no deeper than [`JSON_DEPTH_MAX`], or
/// one CSV line (its final newline aside). Values that are not go to the decoders one at a
/// time.
fn one_record(value: &[u8], csv: bool) -> bool {
    if csv {
        return one_csv_line(value);
    }
    let text = value.trim_ascii();
    text.first() == Some(&b'{') && json_brackets(text) == Brackets::OneValue
}

#[derive(Debug, PartialEq, Eq)]
enum Brackets {
    /// The first value closes at the end of the text.
    OneValue,
    /// Something follows the first value, or it does not close.
    NotOne,
    /// The brackets nest deeper than [`JSON_DEPTH_MAX`].
    TooDeep,
}

/// How the brackets of JSON `text` (which starts with its first value) nest, quotes aside.
fn json_brackets(text: &[u8]) -> Brackets {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (at, &byte) in text.iter().enumerate() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > JSON_DEPTH_MAX {
                    return Brackets::TooDeep;
                }
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return if at + 1 == text.len() {
                        Brackets::OneValue
                    } else {
                        Brackets::NotOne
                    };
                }
            }
            _ => {}
        }
    }
    Brackets::NotOne
}

/// Whether the CSV reader (comma-separated, `"` quotes, no escape character) reads `value` as
/// one line: no line break outside quotes but the final one, and no quote left open. A quote
/// opens a quoted field only at the start of a field; elsewhere it is an ordinary character.
fn one_csv_line(value: &[u8]) -> bool {
    enum At {
        FieldStart,
        InField,
        Quoted,
        AfterQuote,
    }
    let value = value
        .strip_suffix(b"\r\n")
        .or_else(|| value.strip_suffix(b"\n"))
        .or_else(|| value.strip_suffix(b"\r"))
        .unwrap_or(value);
    let mut at = At::FieldStart;
    for &byte in value {
        at = match (at, byte) {
            (At::Quoted, b'"') => At::AfterQuote,
            (At::Quoted, _) => At::Quoted,
            (_, b'\n' | b'\r') => return false,
            (At::FieldStart, b'"') | (At::AfterQuote, b'"') => At::Quoted,
            (_, b',') => At::FieldStart,
            _ => At::InField,
        };
    }
    !matches!(at, At::Quoted)
}

/// Decodes every value as one line; NULL values and those flagged in `blank` become rows of
/// NULLs.
pub(crate) fn decode_all(
    schema: &SchemaRef,
    csv: bool,
    values: &BinaryArray,
    blank: Option<&[bool]>,
) -> Result<RecordBatch, ArrowError> {
    let rows = values.len();
    let mut buffer = Vec::with_capacity(values.get_buffer_memory_size() + rows * 2);
    let empty_csv = ",".repeat(schema.fields().len().saturating_sub(1));
    for row in 0..rows {
        let blanked = values.is_null(row) || blank.is_some_and(|blank| blank[row]);
        if blanked {
            if csv {
                buffer.extend_from_slice(empty_csv.as_bytes());
            } else {
                buffer.extend_from_slice(b"{}");
            }
        } else {
            let value = values.value(row);
            if csv {
                // A CSV value ends at its line; a stray newline inside would split it.
                buffer.extend_from_slice(value.strip_suffix(b"\n").unwrap_or(value));
            } else {
                crate::json_fast::push_with_pairs_joined(value, &mut buffer);
            }
        }
        buffer.push(b'\n');
    }
    if csv {
        let mut decoder = arrow::csv::ReaderBuilder::new(Arc::clone(schema))
            .with_header(false)
            .with_batch_size(rows.max(1))
            .build_decoder();
        let mut at = 0;
        while at < buffer.len() {
            let used = decoder.decode(&buffer[at..])?;
            if used == 0 {
                break;
            }
            at += used;
        }
        Ok(decoder
            .flush()?
            .unwrap_or_else(|| RecordBatch::new_empty(Arc::clone(schema))))
    } else {
        let mut decoder = arrow::json::ReaderBuilder::new(Arc::clone(schema))
            .with_batch_size(rows.max(1) + 1)
            .with_coerce_primitive(true)
            .build_decoder()?;
        decoder.decode(&buffer)?;
        if decoder.has_partial_record() {
            return Err(ArrowError::JsonError("a value is truncated JSON".into()));
        }
        Ok(decoder
            .flush()?
            .unwrap_or_else(|| RecordBatch::new_empty(Arc::clone(schema))))
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{AsArray, Float64Array, Int64Array};
    use arrow::datatypes::{Float64Type, Int64Type};

    use super::*;

    fn values(items: &[Option<&str>]) -> BinaryArray {
        BinaryArray::from_iter(items.iter().map(|item| item.map(str::as_bytes)))
    }

    #[test]
    fn declared_schemas_parse_and_say_what_is_wrong() {
        let schema = parse_schema("device_name STRING, metric DOUBLE, ts timestamp").unwrap();
        assert_eq!(schema.fields().len(), 3);
        assert_eq!(schema.field(1).data_type(), &DataType::Float64);
        for (bad, says) in [
            ("a STRING, a INT", "twice"),
            ("a", "not `name TYPE`"),
            ("a DECIMAL", "unknown type DECIMAL"),
            ("_offset BIGINT", "table's own"),
            ("", "no columns"),
        ] {
            let error = parse_schema(bad).unwrap_err().to_string();
            assert!(error.contains(says), "{bad}: {error}");
        }
    }

    #[test]
    fn json_decodes_in_bulk_and_bad_values_get_an_error_text() {
        let schema: SchemaRef = Arc::new(parse_schema("device STRING, metric DOUBLE").unwrap());
        let format = ValueFormat::Json {
            schema: schema.clone(),
            strict: false,
        };
        let good = values(&[
            Some(r#"{"device":"a","metric":1.5}"#),
            None,
            Some(r#"{"metric":2}"#),
        ]);
        let decoded = decode(&format, &good).unwrap();
        assert_eq!(decoded.errors.null_count(), 3);
        let metric = decoded.columns[1].as_primitive::<Float64Type>();
        assert_eq!(
            metric,
            &Float64Array::from(vec![Some(1.5), None, Some(2.0)])
        );

        let bad = values(&[
            Some(r#"{"device":"a","metric":1.5}"#),
            Some(r#"{"device":"b","metric":"#),
            Some("not json"),
            Some(r#"{"device":"c","metric":"high"}"#),
            Some(r#"{"device":"d"}{"device":"e"}"#),
            Some(r#"{"device":"f","metric":3}"#),
        ]);
        let decoded = decode(&format, &bad).unwrap();
        let errors = decoded.errors.as_string::<i32>();
        assert!(errors.is_null(0) && errors.is_null(5));
        for row in 1..5 {
            assert!(!errors.is_null(row), "row {row}");
        }
        let device = decoded.columns[0].as_string::<i32>();
        assert_eq!(device.value(0), "a");
        assert_eq!(device.value(5), "f");
        assert!(device.is_null(1) && device.is_null(4));

        let strict = ValueFormat::Json {
            schema,
            strict: true,
        };
        assert!(decode(&strict, &bad).is_err());
    }

    #[test]
    fn a_value_nested_too_deep_is_a_bad_record_not_a_stack_overflow() {
        let schema: SchemaRef = Arc::new(parse_schema("device STRING").unwrap());
        // A text field holding nested arrays: arrow's decoder turns them into text, recursively.
        let nested = |depth: usize| {
            format!(
                r#"{{"device":{}1{}}}"#,
                "[".repeat(depth - 1),
                "]".repeat(depth - 1)
            )
        };
        // Deep enough to overflow any thread's stack in that walk.
        let deep = nested(200_000);
        let fits = nested(JSON_DEPTH_MAX);
        let rows = values(&[Some(r#"{"device":"a"}"#), Some(&deep), Some(&fits)]);
        let format = ValueFormat::Json {
            schema: schema.clone(),
            strict: false,
        };
        let decoded = decode(&format, &rows).unwrap();
        let device = decoded.columns[0].as_string::<i32>();
        let errors = decoded.errors.as_string::<i32>();
        assert_eq!(device.value(0), "a");
        assert!(errors.is_null(0) && device.is_null(1));
        // As deep as allowed: arrow's decoder has its say (it does not take arrays as text).
        assert!(
            !errors.value(2).contains("nests deeper"),
            "{}",
            errors.value(2)
        );
        assert_eq!(errors.value(1), "the value nests deeper than 1000 levels");
        let strict = ValueFormat::Json {
            schema,
            strict: true,
        };
        let Err(error) = decode(&strict, &rows) else {
            panic!("a strict topic fails on the deep value");
        };
        let error = error.to_string();
        assert!(error.contains("nests deeper than 1000"), "{error}");
    }

    #[test]
    fn a_truncated_value_does_not_run_on_into_the_next() {
        // Joined one per line, these would read as two good records, `a` = 1 and 2.
        let schema: SchemaRef = Arc::new(parse_schema("a BIGINT").unwrap());
        let decoded = decode_exact(
            &schema,
            false,
            false,
            &values(&[Some(r#"{"a":"#), Some(r#"1}{"a":2}"#), Some(r#"{"a":3}"#)]),
        )
        .unwrap();
        let a = decoded.columns[0].as_primitive::<Int64Type>();
        assert_eq!(a, &Int64Array::from(vec![None, None, Some(3)]));
        let errors = decoded.errors.as_string::<i32>();
        assert!(!errors.is_null(0) && !errors.is_null(1) && errors.is_null(2));

        // A CSV field whose quote never closes takes the next line in.
        let schema: SchemaRef = Arc::new(parse_schema("a STRING, b STRING").unwrap());
        let decoded = decode_exact(
            &schema,
            true,
            false,
            &values(&[Some(r#""x"#), Some(r#"y",z"#), Some("p,q")]),
        )
        .unwrap();
        let a = decoded.columns[0].as_string::<i32>();
        assert!(a.is_null(0) && a.value(1) == "y\"" && a.value(2) == "p");
        let errors = decoded.errors.as_string::<i32>();
        assert!(errors.value(0).contains("quote is not closed"));
        assert!(errors.is_null(1) && errors.is_null(2));

        // A quote inside a field is a plain character; one at the start of a field opens it.
        let decoded = decode_exact(
            &schema,
            true,
            false,
            &values(&[Some(r#"x"y,"z"#), Some(r#"w"v,u"#), Some("a\"b,c\r\n")]),
        )
        .unwrap();
        let a = decoded.columns[0].as_string::<i32>();
        let b = decoded.columns[1].as_string::<i32>();
        assert!(a.is_null(0) && b.is_null(0));
        assert_eq!((a.value(1), b.value(1)), ("w\"v", "u"));
        assert_eq!((a.value(2), b.value(2)), ("a\"b", "c"));
        let errors = decoded.errors.as_string::<i32>();
        assert!(!errors.is_null(0) && errors.is_null(1) && errors.is_null(2));

        for (value, csv, whole) in [
            (r#" {"a":"}{","b":[1,{"c":2}]} "#, false, true),
            (r#"{"a":"\"}"}"#, false, true),
            (r#"{"a":1}}"#, false, false),
            (r#"{"a":1} x"#, false, false),
            (r#"[1]"#, false, false),
            ("1,\"two\nlines\"\n", true, true),
            ("1,2\n3,4", true, false),
            ("1,2\r\n", true, true),
            ("1,2\r", true, true),
            ("", true, true),
            ("\"a,b", true, false),
            ("12\" pipe,3", true, true),
            ("\"a\"\"b\",c", true, true),
            ("\"ab\"c\"d,e", true, true),
            ("x\"y,\"z", true, false),
        ] {
            assert_eq!(one_record(value.as_bytes(), csv), whole, "{value:?}");
        }
    }

    #[test]
    fn csv_lines_decode_by_position() {
        let schema: SchemaRef = Arc::new(parse_schema("id BIGINT, name STRING").unwrap());
        let format = ValueFormat::Csv {
            schema,
            strict: false,
        };
        let decoded = decode(
            &format,
            &values(&[Some("1,one"), Some("x,two"), Some("3,three\n")]),
        )
        .unwrap();
        let id = decoded.columns[0].as_primitive::<Int64Type>();
        assert_eq!(id, &Int64Array::from(vec![Some(1), None, Some(3)]));
        assert!(!decoded.errors.is_null(1));
    }

    #[test]
    fn configs_are_checked_as_a_whole() {
        let check = |pairs: &[(&str, &str)]| {
            let config =
                broker::topic_config::TopicConfig::from_pairs(pairs.iter().copied()).unwrap();
            check_config(&config).map_err(|error| error.to_string())
        };
        let avro = r#"{"type": "record", "name": "R", "fields": [{"name": "a", "type": "long"}]}"#;
        assert!(check(&[("value.format", "json")]).is_ok());
        assert!(check(&[("value.format", "raw"), ("value.schema", "{")]).is_ok());
        assert!(check(&[("value.format", "avro"), ("value.schema", avro)]).is_ok());
        for (pairs, says) in [
            (
                &[("value.format", "json"), ("value.schema", "a DECIMAL")][..],
                "unknown type DECIMAL",
            ),
            (&[("value.format", "avro")][..], "needs value.schema"),
            (
                &[("value.format", "avro"), ("value.schema", "a BIGINT")][..],
                "it is not JSON",
            ),
        ] {
            let error = check(pairs).unwrap_err();
            assert!(error.contains(says), "{pairs:?}: {error}");
        }
    }

    #[test]
    fn inference_takes_objects_and_drops_reserved_names() {
        let sample = [
            br#"{"b": 1, "a": "x", "_offset": 3}"#.as_slice(),
            b"[1, 2]",
            br#"{"b": 2.5, "c": true}"#,
        ];
        let schema = infer_json_schema(sample.into_iter());
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(schema.field(1).data_type(), &DataType::Float64);
    }
}

/// A topic's value format as typed columns in its cold Parquet files.
#[derive(Debug)]
pub struct TypedValues {
    format: ValueFormat,
}

impl TypedValues {
    /// `None` for raw values: nothing to type.
    pub fn of(format: ValueFormat) -> Option<TypedValues> {
        format.decodes().then_some(TypedValues { format })
    }

    /// The name files carry for `format`'s columns.
    pub fn describe_format(format: &ValueFormat) -> Option<String> {
        let kind = match format {
            ValueFormat::Raw => return None,
            ValueFormat::Json { .. } => "json".to_string(),
            ValueFormat::Csv { .. } => "csv".to_string(),
            ValueFormat::Avro { avro, .. } => avro.kind(),
        };
        let fields: Vec<String> = format
            .fields()
            .iter()
            .map(|field| format!("{} {}", field.name(), field.data_type()))
            .collect();
        Some(format!("{kind}: {}", fields.join(", ")))
    }
}

impl tier::convert::ValueColumns for TypedValues {
    fn fields(&self) -> arrow::datatypes::Fields {
        self.format.fields().into()
    }

    fn describe(&self) -> String {
        TypedValues::describe_format(&self.format).unwrap_or_default()
    }

    fn decode(
        &self,
        values: &arrow::array::BinaryViewArray,
    ) -> Result<(arrow::array::StructArray, ArrayRef), String> {
        let values =
            arrow::compute::cast(values, &DataType::Binary).map_err(|error| error.to_string())?;
        let values = values
            .as_any()
            .downcast_ref::<BinaryArray>()
            .expect("cast to binary");
        // Never strict here: a value that does not decode keeps its bytes, with NULL fields.
        let decoded = decode(&self.format.lenient(), values).map_err(|error| error.to_string())?;
        let fields = arrow::array::StructArray::try_new(self.fields(), decoded.columns, None)
            .map_err(|error| error.to_string())?;
        Ok((fields, decoded.errors))
    }
}
