//! Avro values (`value.format=avro`): each record's value is one Avro binary datum of the
//! record schema declared in `value.schema`, either plain or in Confluent's wire format (the
//! magic byte 0x00 and a 4-byte big-endian schema id before the datum), as the topic config
//! `value.avro.framing` says. The datums become Arrow columns through `arrow-avro`.
//!
//! Every value is decoded on its own, so a bad one (wrong framing, another schema id, a
//! malformed or truncated datum, bytes left after the datum) gives that row NULL columns and an
//! error text while its neighbours decode.
//!
//! ```
//! use arrow::array::{Array, BinaryArray};
//! use sql::avro::{AvroFormat, Framing};
//!
//! let schema = r#"{"type": "record", "name": "Reading", "fields": [{"name": "metric", "type": "long"}]}"#;
//! let format = AvroFormat::new(schema, Framing::None, None).unwrap();
//! // 42 is the zigzag varint 0x54; the second value has a byte too many.
//! let values = BinaryArray::from_iter_values([&[0x54][..], &[0x54, 0x00]]);
//! let decoded = format.decode(&values, false).unwrap();
//! assert_eq!(decoded.errors.null_count(), 1);
//! ```

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, DictionaryArray, Int32Array, ListArray, MapArray,
    RecordBatch, RecordBatchOptions, StringArray, StringBuilder, StructArray, UInt32Array,
    new_null_array,
};
use arrow::datatypes::Int32Type;
use arrow::datatypes::{DataType, Field, FieldRef, Fields, Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow_avro::codec::Tz;
use arrow_avro::errors::AvroError;
use arrow_avro::reader::{Decoder, ReaderBuilder};
use arrow_avro::schema::{
    AVRO_ENUM_SYMBOLS_METADATA_KEY, AvroSchema, Fingerprint, FingerprintAlgorithm,
    FingerprintStrategy, SCHEMA_METADATA_KEY, SchemaStore,
};
use arrow_avro::writer::WriterBuilder;
use arrow_avro::writer::format::AvroSoeFormat;

use crate::format::{Decoded, FormatError};

/// The Confluent wire format's first byte.
const CONFLUENT_MAGIC: u8 = 0x00;
/// Magic byte plus schema id.
const CONFLUENT_HEADER_BYTES: usize = 5;

/// How a value wraps its Avro datum (the topic config `value.avro.framing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `confluent`: 0x00, a 4-byte big-endian schema id, then the datum.
    Confluent,
    /// `none`: the datum alone.
    None,
}

impl Framing {
    pub fn from_config(value: &str) -> Framing {
        match value {
            "none" => Framing::None,
            _ => Framing::Confluent,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Framing::Confluent => "confluent",
            Framing::None => "none",
        }
    }
}

/// A topic's Avro value format: the writer schema, the framing, and the columns it decodes to.
#[derive(Debug)]
pub struct AvroFormat {
    /// The declared schema, as JSON text.
    writer_schema: String,
    framing: Framing,
    /// With Confluent framing, the one schema id values must carry (`value.avro.schema.id`);
    /// `None` takes any id.
    schema_id: Option<u32>,
    /// The value columns: the record's fields, every one nullable.
    columns: SchemaRef,
    /// What arrow-avro's writer takes to encode datums of the schema: the Arrow types its
    /// reader decodes them as, and the schema text in the metadata.
    written: SchemaRef,
}

impl PartialEq for AvroFormat {
    fn eq(&self, other: &AvroFormat) -> bool {
        self.writer_schema == other.writer_schema
            && self.framing == other.framing
            && self.schema_id == other.schema_id
    }
}

impl AvroFormat {
    /// Checks `writer_schema` (JSON text of an Avro record schema) and works out its columns.
    pub fn new(
        writer_schema: &str,
        framing: Framing,
        schema_id: Option<u32>,
    ) -> Result<AvroFormat, FormatError> {
        let bad = |reason: String| FormatError::BadAvroSchema(reason);
        let json: serde_json::Value = serde_json::from_str(writer_schema)
            .map_err(|error| bad(format!("it is not JSON ({error})")))?;
        let is_record = json
            .as_object()
            .and_then(|object| object.get("type"))
            .and_then(serde_json::Value::as_str)
            == Some("record");
        if !is_record {
            return Err(bad(
                "the top level must be a record (`{\"type\": \"record\", ...}`): its fields become the columns".into(),
            ));
        }
        let decoder = new_decoder(writer_schema, 1).map_err(|error| bad(error.to_string()))?;
        let decoded = decoder.schema();
        if decoded.fields().is_empty() {
            return Err(bad("the record has no fields".into()));
        }
        let mut fields = Vec::with_capacity(decoded.fields().len());
        for field in decoded.fields() {
            let name = field.name();
            if name.starts_with('_') {
                return Err(bad(format!(
                    "field `{name}`: names starting with `_` are the table's own columns"
                )));
            }
            let data_type = column_type(field.data_type())
                .map_err(|reason| bad(format!("field `{name}`: {reason}")))?;
            fields.push(Field::new(name, data_type, true));
        }
        Ok(AvroFormat {
            writer_schema: writer_schema.to_string(),
            framing,
            schema_id,
            columns: Arc::new(Schema::new(fields)),
            written: Arc::new(Schema::new(decoded.fields().clone()).with_metadata(
                [(SCHEMA_METADATA_KEY.to_string(), writer_schema.to_string())].into(),
            )),
        })
    }

    /// The value columns.
    pub fn columns(&self) -> &SchemaRef {
        &self.columns
    }

    /// What typed columns decoded by this format are named by, in cold files: a change of
    /// framing or schema id changes what the columns hold, so it is part of the name.
    pub fn kind(&self) -> String {
        match self.schema_id {
            Some(id) => format!("avro({}, id {id})", self.framing.name()),
            None => format!("avro({})", self.framing.name()),
        }
    }

    /// Decodes `values` (one per row; NULL for a tombstone). A value that does not decode gets
    /// NULL columns and an error text, or fails the whole call when `strict`.
    pub fn decode(&self, values: &BinaryArray, strict: bool) -> Result<Decoded, ArrowError> {
        let rows = values.len();
        let mut run = Run {
            format: self,
            values,
            strict,
            errors: vec![None; rows],
            batches: Vec::new(),
            frame: Vec::new(),
        };
        let mut decoder = new_decoder(&self.writer_schema, rows)?;
        // Rows decoded into `decoder` since its last flush.
        let mut pending: Vec<usize> = Vec::new();
        for row in 0..rows {
            if values.is_null(row) {
                continue;
            }
            let outcome = self
                .datum(values.value(row))
                .and_then(|datum| decode_one(&mut decoder, &mut run.frame, datum));
            match outcome {
                Ok(()) => pending.push(row),
                Err(message) => {
                    run.bad(row, message)?;
                    // The decoder may hold part of this value: the good rows before it are
                    // decoded again by a new one.
                    run.decode_rows(&pending)?;
                    pending.clear();
                    decoder = new_decoder(&self.writer_schema, rows)?;
                }
            }
        }
        match decoder.flush() {
            Ok(batch) => run.batches.extend(batch),
            Err(_) => run.decode_rows(&pending)?,
        }
        let Run {
            errors, batches, ..
        } = run;
        let decoded = match batches.as_slice() {
            [] => None,
            [one] => Some(one.clone()),
            many => Some(arrow::compute::concat_batches(&many[0].schema(), many)?),
        };
        // Each row's place among the decoded rows; None for tombstones and bad values.
        let mut next = 0u32;
        let places: Vec<Option<u32>> = (0..rows)
            .map(|row| {
                (!values.is_null(row) && errors[row].is_none()).then(|| {
                    next += 1;
                    next - 1
                })
            })
            .collect();
        let mut columns = Vec::with_capacity(self.columns.fields().len());
        for (at, field) in self.columns.fields().iter().enumerate() {
            let column = match &decoded {
                None => new_null_array(field.data_type(), rows),
                Some(batch) => {
                    let column = batch.column(at);
                    let column = if column.data_type() == field.data_type() {
                        Arc::clone(column)
                    } else {
                        arrow::compute::cast(column, field.data_type())?
                    };
                    if column.len() == rows {
                        column
                    } else {
                        // Put tombstones and bad values in as NULL rows.
                        let indices = UInt32Array::from(places.clone());
                        arrow::compute::take(&column, &indices, None)?
                    }
                }
            };
            columns.push(column);
        }
        let mut texts = StringBuilder::new();
        for error in errors {
            texts.append_option(error);
        }
        Ok(Decoded {
            columns,
            errors: Arc::new(texts.finish()),
        })
    }

    /// Encodes the value columns of `batch` (by name; a missing one is NULL) as one value per
    /// row: a datum of the declared schema, framed as the topic says. With Confluent framing
    /// the topic must name its schema id (`value.avro.schema.id`), which goes in each value.
    pub fn encode(&self, batch: &RecordBatch) -> Result<Vec<Vec<u8>>, String> {
        let Some(id) = self.schema_id.or(match self.framing {
            Framing::None => Some(FRAME_SCHEMA_ID),
            Framing::Confluent => None,
        }) else {
            return Err("writing value columns into Confluent-framed Avro values needs the schema id they carry: set value.avro.schema.id".into());
        };
        let rows = batch.num_rows();
        let mut columns = Vec::with_capacity(self.written.fields().len());
        for field in self.written.fields() {
            let name = field.name();
            let column = match batch.column_by_name(name) {
                Some(column) => column_for(column, field)
                    .map_err(|reason| format!("column {name}: {reason}"))?,
                None => new_null_array(field.data_type(), rows),
            };
            if !field.is_nullable() && column.null_count() > 0 {
                return Err(format!(
                    "column {name} is NULL in a row, but the Avro schema does not allow null there (a union with \"null\" does)"
                ));
            }
            columns.push(column);
        }
        let batch = RecordBatch::try_new_with_options(
            Arc::clone(&self.written),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )
        .map_err(|error| error.to_string())?;
        let mut encoder = WriterBuilder::new(self.written.as_ref().clone())
            .with_fingerprint_strategy(FingerprintStrategy::Id(id))
            .build_encoder::<AvroSoeFormat>()
            .map_err(|error| error.to_string())?;
        encoder.encode(&batch).map_err(|error| error.to_string())?;
        let keep = match self.framing {
            Framing::None => CONFLUENT_HEADER_BYTES,
            Framing::Confluent => 0,
        };
        Ok(encoder
            .flush()
            .iter()
            .map(|value| value[keep..].to_vec())
            .collect())
    }

    /// The datum inside `value`, by the framing.
    fn datum<'a>(&self, value: &'a [u8]) -> Result<&'a [u8], String> {
        match self.framing {
            Framing::None => Ok(value),
            Framing::Confluent => {
                if value.len() < CONFLUENT_HEADER_BYTES || value[0] != CONFLUENT_MAGIC {
                    return Err(
                        "the value is not in Confluent's wire format (the byte 0x00 and a 4-byte schema id before the datum); for plain Avro datums set value.avro.framing=none"
                            .into(),
                    );
                }
                let id = u32::from_be_bytes(value[1..5].try_into().expect("4 bytes"));
                if let Some(expected) = self.schema_id
                    && id != expected
                {
                    return Err(format!(
                        "the value was written with schema id {id}, but value.avro.schema.id is {expected}"
                    ));
                }
                Ok(&value[CONFLUENT_HEADER_BYTES..])
            }
        }
    }
}

/// One call of `AvroFormat::decode`: the errors found so far and the batches of good rows, in
/// row order.
struct Run<'a> {
    format: &'a AvroFormat,
    values: &'a BinaryArray,
    strict: bool,
    errors: Vec<Option<String>>,
    batches: Vec<RecordBatch>,
    frame: Vec<u8>,
}

impl Run<'_> {
    fn bad(&mut self, row: usize, message: String) -> Result<(), ArrowError> {
        if self.strict {
            return Err(ArrowError::ParseError(format!(
                "a value does not decode as Avro: {message} (value.decode.strict=true)"
            )));
        }
        self.errors[row] = Some(message);
        Ok(())
    }

    /// Decodes `rows`, each a whole datum on its own, into batches. Some checks (an enum index
    /// out of range) only fail when the decoder flushes: then the rows are halved until the
    /// bad ones are found.
    fn decode_rows(&mut self, rows: &[usize]) -> Result<(), ArrowError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut decoder = new_decoder(&self.format.writer_schema, rows.len())?;
        for &row in rows {
            let datum = self
                .format
                .datum(self.values.value(row))
                .map_err(ArrowError::ParseError)?;
            decode_one(&mut decoder, &mut self.frame, datum).map_err(ArrowError::ParseError)?;
        }
        match decoder.flush() {
            Ok(batch) => {
                self.batches.extend(batch);
                Ok(())
            }
            Err(error) if rows.len() == 1 => self.bad(rows[0], describe(&error)),
            Err(_) => {
                let (first, second) = rows.split_at(rows.len() / 2);
                self.decode_rows(first)?;
                self.decode_rows(second)
            }
        }
    }
}

/// A decoder of `writer_schema` datums, each fed as a frame of `FRAME_PREFIX` and the datum
/// (arrow-avro's streaming decoder reads framed datums only; the id is ours, not the value's).
fn new_decoder(writer_schema: &str, rows: usize) -> Result<Decoder, ArrowError> {
    let mut store = SchemaStore::new_with_type(FingerprintAlgorithm::Id);
    store.set(
        Fingerprint::Id(FRAME_SCHEMA_ID),
        AvroSchema::new(writer_schema.to_string()),
    )?;
    ReaderBuilder::new()
        .with_writer_schema_store(store)
        .with_active_fingerprint(Fingerprint::Id(FRAME_SCHEMA_ID))
        // One row of room beyond the values, for `decode_one`'s probe.
        .with_batch_size(rows + 1)
        .with_tz(Tz::Utc)
        .build_decoder()
}

const FRAME_SCHEMA_ID: u32 = 0;
const FRAME_PREFIX: [u8; 5] = [CONFLUENT_MAGIC, 0, 0, 0, 0];

/// Decodes one datum into `decoder` as exactly one row, or says why it is not one.
fn decode_one(decoder: &mut Decoder, frame: &mut Vec<u8>, datum: &[u8]) -> Result<(), String> {
    frame.clear();
    frame.extend_from_slice(&FRAME_PREFIX);
    frame.extend_from_slice(datum);
    let room = decoder.capacity();
    // arrow-avro reads untrusted bytes here; a panic in it must not take the query (or the
    // upload) down with it.
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let used = decoder.decode(frame);
        // Whether the decoder now waits for the start of a frame, as it must after a whole
        // datum: a byte that cannot start one is refused without touching its state, while a
        // decoder still inside a datum would take it as data.
        let probe = decoder.decode(&[CONFLUENT_MAGIC + 1]);
        (used, probe.as_ref().is_err_and(is_missing_magic))
    }));
    let Ok((used, between_frames)) = outcome else {
        return Err("the Avro decoder failed on this value".into());
    };
    let rows = room - decoder.capacity();
    match used {
        Ok(used) if rows == 1 && used == frame.len() && between_frames => Ok(()),
        // After a datum, what is left cannot start a frame.
        Err(error) if rows >= 1 && is_missing_magic(&error) => {
            Err("bytes are left after the Avro datum".into())
        }
        Err(error) => Err(describe(&error)),
        Ok(_) if rows == 0 => Err("the Avro datum is truncated".into()),
        Ok(_) => Err("bytes are left after the Avro datum".into()),
    }
}

/// `column` as arrow-avro's writer takes `target`: an enum (a dictionary of its symbols, in
/// order) from its symbol names, also inside records, arrays and maps; anything else by a cast
/// that fails on a value that does not fit.
fn column_for(column: &ArrayRef, target: &Field) -> Result<ArrayRef, String> {
    match target.data_type() {
        DataType::Dictionary(_, _) => return enum_column(column, target),
        DataType::Struct(fields) if holds_enum(target.data_type()) => {
            let records = column.as_struct_opt().ok_or_else(|| {
                format!(
                    "a record is written from a struct, not {}",
                    column.data_type()
                )
            })?;
            let children = fields
                .iter()
                .map(|field| {
                    let child = records
                        .column_by_name(field.name())
                        .cloned()
                        .unwrap_or_else(|| new_null_array(field.data_type(), records.len()));
                    column_for(&child, field)
                        .map_err(|reason| format!("{}: {reason}", field.name()))
                })
                .collect::<Result<Vec<_>, String>>()?;
            return built(StructArray::try_new(
                fields.clone(),
                children,
                records.nulls().cloned(),
            ));
        }
        DataType::List(item) if holds_enum(item.data_type()) => {
            let list = column.as_list_opt::<i32>().ok_or_else(|| {
                format!(
                    "an array is written from a list, not {}",
                    column.data_type()
                )
            })?;
            let items = column_for(list.values(), item)?;
            return built(ListArray::try_new(
                Arc::clone(item),
                list.offsets().clone(),
                items,
                list.nulls().cloned(),
            ));
        }
        DataType::Map(entries, sorted) if holds_enum(target.data_type()) => {
            let map = column.as_map_opt().ok_or_else(|| {
                format!("a map is written from a map, not {}", column.data_type())
            })?;
            let DataType::Struct(fields) = entries.data_type() else {
                return Err(format!("map entries of type {}", entries.data_type()));
            };
            // Keys and values by position: the names of a map's entries vary between writers.
            let children = fields
                .iter()
                .zip(map.entries().columns())
                .map(|(field, child)| column_for(child, field))
                .collect::<Result<Vec<_>, String>>()?;
            let entries_array = StructArray::try_new(fields.clone(), children, None)
                .map_err(|error| error.to_string())?;
            return built(MapArray::try_new(
                Arc::clone(entries),
                map.offsets().clone(),
                entries_array,
                map.nulls().cloned(),
                *sorted,
            ));
        }
        _ => {}
    }
    // Not arrow's "safe" cast, which turns a value that does not fit into NULL.
    let options = arrow::compute::CastOptions {
        safe: false,
        ..Default::default()
    };
    arrow::compute::cast_with_options(column, target.data_type(), &options)
        .map_err(|error| error.to_string())
}

/// An array `column_for` built, or why it could not be.
fn built(array: Result<impl Array + 'static, ArrowError>) -> Result<ArrayRef, String> {
    array
        .map(|array| Arc::new(array) as ArrayRef)
        .map_err(|error| error.to_string())
}

/// Whether an enum is in `data_type`, at any depth of records, arrays and maps.
fn holds_enum(data_type: &DataType) -> bool {
    match data_type {
        DataType::Dictionary(_, _) => true,
        DataType::Struct(fields) => fields.iter().any(|field| holds_enum(field.data_type())),
        DataType::List(item) => holds_enum(item.data_type()),
        DataType::Map(entries, _) => holds_enum(entries.data_type()),
        _ => false,
    }
}

/// An enum column from its symbol names.
fn enum_column(column: &ArrayRef, target: &Field) -> Result<ArrayRef, String> {
    // arrow-avro names an enum's symbols in its field's metadata.
    let symbols: Vec<String> = target
        .metadata()
        .get(AVRO_ENUM_SYMBOLS_METADATA_KEY)
        .and_then(|json| serde_json::from_str(json).ok())
        .ok_or("an enum without its symbols cannot be written")?;
    let names = arrow::compute::cast(column, &DataType::Utf8).map_err(|error| error.to_string())?;
    let keys = names
        .as_string::<i32>()
        .iter()
        .map(|name| {
            name.map(|name| {
                symbols
                    .iter()
                    .position(|symbol| symbol == name)
                    .map(|at| at as i32)
                    .ok_or_else(|| format!("{name:?} is not one of the enum's symbols {symbols:?}"))
            })
            .transpose()
        })
        .collect::<Result<Int32Array, String>>()?;
    let values: ArrayRef = Arc::new(StringArray::from(symbols));
    built(DictionaryArray::<Int32Type>::try_new(keys, values))
}

/// The decoder's answer to bytes that do not start a frame.
fn is_missing_magic(error: &AvroError) -> bool {
    matches!(error, AvroError::ParseError(message) if message.starts_with("Missing magic"))
}

fn describe(error: &AvroError) -> String {
    match error {
        AvroError::EOF(_) | AvroError::NeedMoreData(_) | AvroError::NeedMoreDataRange(_) => {
            "the Avro datum is truncated".into()
        }
        other => format!("the value is not a datum of the declared Avro schema: {other}"),
    }
}

/// The column type of a decoded Avro type: enums become strings, timestamps are UTC, field
/// metadata is dropped; types Parquet cannot hold are refused.
fn column_type(data_type: &DataType) -> Result<DataType, String> {
    let field = |field: &FieldRef| -> Result<FieldRef, String> {
        Ok(Arc::new(Field::new(
            field.name(),
            column_type(field.data_type())?,
            field.is_nullable(),
        )))
    };
    // An item that takes no bytes would let a value claim 2^63 items for free.
    let sized = |item: &FieldRef| -> Result<(), String> {
        match item.data_type() {
            DataType::Null => Err("arrays and maps of null are not supported".into()),
            DataType::Struct(fields) if fields.is_empty() => {
                Err("arrays and maps of empty records are not supported".into())
            }
            _ => Ok(()),
        }
    };
    if let DataType::List(item) | DataType::LargeList(item) = data_type {
        sized(item)?;
    }
    if let DataType::Map(entries, _) = data_type
        && let DataType::Struct(entry) = entries.data_type()
        && let Some(value) = entry.get(1)
    {
        sized(value)?;
    }
    Ok(match data_type {
        DataType::Dictionary(_, values) if values.as_ref() == &DataType::Utf8 => DataType::Utf8,
        DataType::Struct(fields) => DataType::Struct(
            fields
                .iter()
                .map(field)
                .collect::<Result<Fields, String>>()?,
        ),
        DataType::List(item) => DataType::List(field(item)?),
        DataType::LargeList(item) => DataType::LargeList(field(item)?),
        DataType::FixedSizeList(item, size) => DataType::FixedSizeList(field(item)?, *size),
        DataType::Map(entries, sorted) => DataType::Map(field(entries)?, *sorted),
        DataType::Union(..) => {
            return Err(
                "unions of several non-null types are not supported; use [\"null\", T] or one type"
                    .into(),
            );
        }
        DataType::Interval(_) | DataType::Duration(_) => {
            return Err("the duration logical type is not supported; use a long or fixed".into());
        }
        DataType::Timestamp(unit, Some(_)) => DataType::Timestamp(*unit, Some("UTC".into())),
        DataType::Timestamp(unit, None) => DataType::Timestamp(*unit, None),
        DataType::Dictionary(..) => {
            return Err(format!("{data_type} is not supported"));
        }
        other => other.clone(),
    })
}

#[cfg(test)]
mod tests {
    use arrow::array::{AsArray, Int64Array};
    use arrow::datatypes::{Int64Type, TimeUnit, TimestampMillisecondType};

    use super::*;

    const READING: &str = r#"{
        "type": "record", "name": "Reading", "namespace": "iot",
        "fields": [
            {"name": "id", "type": "long"},
            {"name": "name", "type": ["null", "string"], "default": null},
            {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["GAUGE", "COUNTER"]}},
            {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
            {"name": "tags", "type": {"type": "array", "items": "string"}}
        ]
    }"#;

    /// Avro's zigzag varint.
    fn long(value: i64) -> Vec<u8> {
        let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
        let mut out = Vec::new();
        loop {
            if zigzag < 0x80 {
                out.push(zigzag as u8);
                return out;
            }
            out.push((zigzag as u8 & 0x7f) | 0x80);
            zigzag >>= 7;
        }
    }

    fn string(text: &str) -> Vec<u8> {
        let mut out = long(text.len() as i64);
        out.extend_from_slice(text.as_bytes());
        out
    }

    /// A `READING` datum.
    fn reading(id: i64, name: Option<&str>, kind: i64, at: i64, tags: &[&str]) -> Vec<u8> {
        let mut out = long(id);
        match name {
            Some(name) => {
                out.extend(long(1));
                out.extend(string(name));
            }
            None => out.extend(long(0)),
        }
        out.extend(long(kind));
        out.extend(long(at));
        if !tags.is_empty() {
            out.extend(long(tags.len() as i64));
            for tag in tags {
                out.extend(string(tag));
            }
        }
        out.extend(long(0));
        out
    }

    fn confluent(id: u32, datum: &[u8]) -> Vec<u8> {
        let mut out = vec![0];
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(datum);
        out
    }

    fn binary(values: &[Option<Vec<u8>>]) -> BinaryArray {
        BinaryArray::from_iter(values.iter().map(Option::as_deref))
    }

    /// Decodes `values` with strict decoding, and checks that every one is a datum.
    fn decode_strictly(format: &AvroFormat, values: &[Vec<u8>]) -> Decoded {
        let values: Vec<Option<Vec<u8>>> = values.iter().cloned().map(Some).collect();
        let decoded = format.decode(&binary(&values), true).unwrap();
        assert!(errors(&decoded).iter().all(Option::is_none));
        decoded
    }

    fn errors(decoded: &Decoded) -> Vec<Option<String>> {
        decoded
            .errors
            .as_string::<i32>()
            .iter()
            .map(|error| error.map(str::to_string))
            .collect()
    }

    #[test]
    fn schemas_map_to_columns() {
        let format = AvroFormat::new(READING, Framing::None, None).unwrap();
        let columns = format.columns();
        let types: Vec<(&str, &DataType)> = columns
            .fields()
            .iter()
            .map(|field| (field.name().as_str(), field.data_type()))
            .collect();
        assert_eq!(types[0], ("id", &DataType::Int64));
        assert_eq!(types[1], ("name", &DataType::Utf8));
        assert_eq!(types[2], ("kind", &DataType::Utf8));
        assert_eq!(
            types[3],
            (
                "at",
                &DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
            )
        );
        assert!(matches!(types[4].1, DataType::List(item) if item.data_type() == &DataType::Utf8));
        assert!(columns.fields().iter().all(|field| field.is_nullable()));

        let nested = r#"{"type": "record", "name": "R", "fields": [
            {"name": "flag", "type": "boolean"},
            {"name": "ratio", "type": "float"},
            {"name": "blob", "type": "bytes"},
            {"name": "at_us", "type": {"type": "long", "logicalType": "timestamp-micros"}},
            {"name": "attrs", "type": {"type": "map", "values": "long"}},
            {"name": "where", "type": {"type": "record", "name": "Where", "fields": [
                {"name": "lat", "type": "double"},
                {"name": "level", "type": {"type": "enum", "name": "Level", "symbols": ["LOW", "HIGH"]}}
            ]}}
        ]}"#;
        let format = AvroFormat::new(nested, Framing::Confluent, None).unwrap();
        let types: Vec<&DataType> = format
            .columns()
            .fields()
            .iter()
            .map(|field| field.data_type())
            .collect();
        assert_eq!(types[0], &DataType::Boolean);
        assert_eq!(types[1], &DataType::Float32);
        assert_eq!(types[2], &DataType::Binary);
        assert_eq!(
            types[3],
            &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        );
        assert!(matches!(types[4], DataType::Map(..)));
        let DataType::Struct(fields) = types[5] else {
            panic!("a record is a struct: {}", types[5]);
        };
        assert_eq!(fields[1].data_type(), &DataType::Utf8);

        let logical = r#"{"type": "record", "name": "R", "fields": [
            {"name": "n", "type": "null"},
            {"name": "day", "type": {"type": "int", "logicalType": "date"}},
            {"name": "tod", "type": {"type": "int", "logicalType": "time-millis"}},
            {"name": "local", "type": {"type": "long", "logicalType": "local-timestamp-millis"}},
            {"name": "price", "type": {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2}},
            {"name": "id", "type": {"type": "string", "logicalType": "uuid"}},
            {"name": "hash", "type": {"type": "fixed", "name": "Hash", "size": 4}}
        ]}"#;
        let format = AvroFormat::new(logical, Framing::None, None).unwrap();
        let types: Vec<String> = format
            .columns()
            .fields()
            .iter()
            .map(|field| field.data_type().to_string())
            .collect();
        assert_eq!(
            types,
            [
                "Null",
                "Date32",
                "Time32(ms)",
                "Timestamp(ms)",
                "Decimal128(10, 2)",
                "FixedSizeBinary(16)",
                "FixedSizeBinary(4)"
            ]
        );
    }

    #[test]
    fn bad_schemas_say_what_is_wrong() {
        for (schema, says) in [
            ("device STRING", "not JSON"),
            (r#""long""#, "must be a record"),
            (r#"{"type": "array", "items": "long"}"#, "must be a record"),
            (
                r#"{"type": "record", "name": "R", "fields": [{"name": "a", "type": "nope"}]}"#,
                "nope",
            ),
            (
                r#"{"type": "record", "name": "R", "fields": [{"name": "_offset", "type": "long"}]}"#,
                "table's own",
            ),
            (
                r#"{"type": "record", "name": "R", "fields": [{"name": "u", "type": ["long", "string"]}]}"#,
                "unions of several",
            ),
            (
                r#"{"type": "record", "name": "R", "fields": []}"#,
                "no fields",
            ),
        ] {
            let error = AvroFormat::new(schema, Framing::None, None)
                .unwrap_err()
                .to_string();
            assert!(error.contains(says), "{schema}: {error}");
            assert!(error.contains("write the record schema as JSON"), "{error}");
        }
    }

    #[test]
    fn plain_datums_decode_and_bad_ones_get_an_error_text() {
        let format = AvroFormat::new(READING, Framing::None, None).unwrap();
        let good = reading(1, Some("a"), 0, 1_700_000_000_000, &["x", "y"]);
        let mut trailing = good.clone();
        trailing.push(0x02);
        // The frame prefix the decoder is fed with, left after a datum: it must still count.
        let mut trailing_prefix = good.clone();
        trailing_prefix.extend_from_slice(&FRAME_PREFIX);
        let values = binary(&[
            Some(good.clone()),
            None,
            Some(good[..good.len() - 2].to_vec()),
            Some(reading(2, None, 1, 5, &[])),
            Some(trailing),
            Some(trailing_prefix),
            Some(vec![]),
            Some(reading(3, Some("c"), 7, 6, &[])),
            Some(reading(4, Some("d"), 1, 7, &["z"])),
        ]);
        let decoded = format.decode(&values, false).unwrap();
        let found = errors(&decoded);
        for good in [0, 1, 3, 8] {
            assert_eq!(found[good], None, "row {good}");
        }
        assert_eq!(found[2].as_deref(), Some("the Avro datum is truncated"));
        assert_eq!(
            found[4].as_deref(),
            Some("bytes are left after the Avro datum")
        );
        assert_eq!(
            found[5].as_deref(),
            Some("bytes are left after the Avro datum")
        );
        assert_eq!(found[6].as_deref(), Some("the Avro datum is truncated"));
        assert!(
            found[7].as_deref().unwrap().contains("not a datum"),
            "{found:?}"
        );

        let ids = decoded.columns[0].as_primitive::<Int64Type>();
        let expected = [
            Some(1),
            None,
            None,
            Some(2),
            None,
            None,
            None,
            None,
            Some(4),
        ];
        assert_eq!(ids, &Int64Array::from(expected.to_vec()));
        let names = decoded.columns[1].as_string::<i32>();
        assert_eq!(names.value(0), "a");
        assert!(names.is_null(3));
        let kinds = decoded.columns[2].as_string::<i32>();
        assert_eq!((kinds.value(0), kinds.value(8)), ("GAUGE", "COUNTER"));
        let at = decoded.columns[3].as_primitive::<TimestampMillisecondType>();
        assert_eq!(at.value(0), 1_700_000_000_000);
        let tags = decoded.columns[4].as_list::<i32>();
        assert_eq!(tags.value(0).len(), 2);
        assert_eq!(tags.value(8).as_string::<i32>().value(0), "z");
        assert!(tags.is_null(2));

        assert!(format.decode(&values, true).is_err());
        let all_good = binary(&[Some(good.clone()), None, Some(good)]);
        let decoded = format.decode(&all_good, true).unwrap();
        assert_eq!(decoded.errors.null_count(), 3);
        assert_eq!(decoded.columns[0].null_count(), 1);
    }

    /// Random bytes and mutations of good datums: never a panic, and a row either decodes or
    /// has an error text (a small fuzz run that runs with the unit tests).
    #[test]
    fn arbitrary_bytes_never_panic() {
        let format = AvroFormat::new(READING, Framing::None, None).unwrap();
        let good = reading(123_456, Some("device"), 1, 1_700_000_000_000, &["a", "bb"]);
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut values = Vec::new();
        for _ in 0..4000 {
            let value = match next() % 3 {
                0 => (0..next() % 40).map(|_| next() as u8).collect(),
                1 => {
                    let mut value = good.clone();
                    let at = (next() as usize) % value.len();
                    value[at] = next() as u8;
                    value
                }
                _ => good[..(next() as usize) % (good.len() + 1)].to_vec(),
            };
            values.push(Some(value));
        }
        let values = binary(&values);
        let decoded = format.decode(&values, false).unwrap();
        assert_eq!(decoded.errors.len(), values.len());
        let ids = decoded.columns[0].as_primitive::<Int64Type>();
        for row in 0..values.len() {
            assert_ne!(decoded.errors.is_null(row), ids.is_null(row), "row {row}");
        }
        assert!(decoded.errors.null_count() > 0 && ids.null_count() > 0);
    }

    #[test]
    fn confluent_framing_is_checked() {
        let datum = reading(9, Some("n"), 0, 1, &[]);
        let values = binary(&[
            Some(confluent(7, &datum)),
            Some(datum.clone()),
            Some(vec![0, 0, 7]),
            Some(confluent(8, &datum)),
        ]);
        let any_id = AvroFormat::new(READING, Framing::Confluent, None).unwrap();
        let found = errors(&any_id.decode(&values, false).unwrap());
        assert_eq!(found[0], None);
        assert!(
            found[1]
                .as_deref()
                .unwrap()
                .contains("Confluent's wire format")
        );
        assert!(
            found[2]
                .as_deref()
                .unwrap()
                .contains("value.avro.framing=none")
        );
        assert_eq!(found[3], None);

        let one_id = AvroFormat::new(READING, Framing::Confluent, Some(7)).unwrap();
        let found = errors(&one_id.decode(&values, false).unwrap());
        assert_eq!(found[0], None);
        assert_eq!(
            found[3].as_deref(),
            Some("the value was written with schema id 8, but value.avro.schema.id is 7")
        );
        assert_ne!(one_id.kind(), any_id.kind());
    }

    #[test]
    fn encoded_columns_decode_back_and_a_value_that_does_not_fit_is_an_error() {
        let schema = r#"{"type": "record", "name": "R", "fields": [
            {"name": "n", "type": ["null", "int"]},
            {"name": "kind", "type": {"type": "enum", "name": "K", "symbols": ["A", "B"]}}
        ]}"#;
        let format = AvroFormat::new(schema, Framing::None, None).unwrap();
        let batch = |n: Int64Array, kinds: Vec<&str>| {
            RecordBatch::try_from_iter([
                ("n", Arc::new(n) as ArrayRef),
                ("kind", Arc::new(StringArray::from(kinds)) as ArrayRef),
            ])
            .unwrap()
        };
        let values = format
            .encode(&batch(
                Int64Array::from(vec![Some(5), None]),
                vec!["B", "A"],
            ))
            .unwrap();
        // n: the union's branch 1 (int) and 5 as zigzag 10, or branch 0 (null); kind: symbol 1, 0.
        assert_eq!(values, vec![vec![0x02, 0x0A, 0x02], vec![0x00, 0x00]]);
        let decoded = decode_strictly(&format, &values);
        let n = decoded.columns[0].as_primitive::<arrow::datatypes::Int32Type>();
        assert_eq!(n.iter().collect::<Vec<_>>(), vec![Some(5), None]);

        // 2^40 does not fit an Avro int: an error, not a NULL.
        let error = format
            .encode(&batch(Int64Array::from(vec![1i64 << 40]), vec!["A"]))
            .unwrap_err();
        assert!(error.starts_with("column n: "), "{error}");
        let error = format
            .encode(&batch(Int64Array::from(vec![1]), vec!["C"]))
            .unwrap_err();
        assert!(
            error.contains("\"C\" is not one of the enum's symbols"),
            "{error}"
        );
    }

    #[test]
    fn enums_inside_records_arrays_and_maps_are_written_from_their_names() {
        let schema = r#"{"type": "record", "name": "R", "fields": [
            {"name": "w", "type": {"type": "record", "name": "W", "fields": [
                {"name": "level", "type": {"type": "enum", "name": "L", "symbols": ["LOW", "HIGH"]}}
            ]}},
            {"name": "steps", "type": {"type": "array", "items": "L"}},
            {"name": "by", "type": {"type": "map", "values": "L"}}
        ]}"#;
        let format = AvroFormat::new(schema, Framing::None, None).unwrap();
        // The table's columns hold the enums as text.
        let levels: ArrayRef = Arc::new(StringArray::from(vec!["HIGH", "LOW"]));
        let w = StructArray::from(vec![(
            Arc::new(Field::new("level", DataType::Utf8, false)),
            levels,
        )]);
        let names: ArrayRef = Arc::new(StringArray::from(vec!["HIGH"]));
        let steps = ListArray::new(
            Arc::new(Field::new("item", DataType::Utf8, false)),
            arrow::buffer::OffsetBuffer::from_lengths([1, 0]),
            names,
            None,
        );
        // A map with other names for its entries than arrow-avro's: {} and {"k": "LOW"}.
        let mut by = arrow::array::MapBuilder::new(
            None,
            arrow::array::StringBuilder::new(),
            arrow::array::StringBuilder::new(),
        );
        by.append(true).unwrap();
        by.keys().append_value("k");
        by.values().append_value("LOW");
        by.append(true).unwrap();
        let batch = RecordBatch::try_from_iter([
            ("w", Arc::new(w) as ArrayRef),
            ("steps", Arc::new(steps) as ArrayRef),
            ("by", Arc::new(by.finish()) as ArrayRef),
        ])
        .unwrap();
        let values = format.encode(&batch).unwrap();
        // Row 0: HIGH (1, zigzag 2), an array of one block [HIGH] and its end, an empty map;
        // row 1: LOW, [], a map of one block: "k" (length 1, zigzag 2) LOW, and its end.
        assert_eq!(
            values,
            vec![
                vec![0x02, 0x02, 0x02, 0x00, 0x00],
                vec![0x00, 0x00, 0x02, 0x02, b'k', 0x00, 0x00]
            ]
        );
        decode_strictly(&format, &values);
    }
}
