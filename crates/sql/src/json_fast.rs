//! A one-pass decoder for the common shape of JSON values: one flat object per value, fields of
//! plain types. It gives exactly what `format::decode_all` (arrow-json's tape decoder with
//! `coerce_primitive`) gives, or says `None` and the caller decodes the whole run the exact way.
//!
//! The happy subset, value by value (anything else makes the whole run `None`):
//! - a NULL slot, which is a row of NULLs;
//! - one JSON object, optionally surrounded by JSON whitespace, in strict JSON syntax (no control
//!   characters in strings, no leading zeros, no stray commas), valid UTF-8 in every string;
//! - a schema field appears at most once (compared after unescaping, as arrow-json compares);
//!   keys outside the schema may repeat and may hold any valid JSON, up to [`NESTING_MAX`] deep;
//! - a schema field holds `null`, or: a string for `Utf8` (or `Utf8View`, built as views); an
//!   integer (no fraction, no exponent) in range for `Int64`, `Int32` and `Timestamp` (without a
//!   time zone or in UTC); any number for `Float64` and `Float32`; `true` or `false` for
//!   `Boolean`.
//!
//! Every field is checked, wanted or not, so a projection never changes which rows decode.
//!
//! ```
//! use std::sync::Arc;
//! use arrow::array::{Array, BinaryArray};
//! use arrow::datatypes::{DataType, Field, Schema};
//!
//! let schema = Arc::new(Schema::new(vec![
//!     Field::new("device", DataType::Utf8, true),
//!     Field::new("metric", DataType::Float64, true),
//! ]));
//! let values = BinaryArray::from_iter([Some(&br#"{"device":"a","metric":1.5}"#[..]), None]);
//! let columns = sql::json_fast::decode_projected(&schema, &[false, true], &values).unwrap();
//! assert!(columns[0].is_none());
//! assert_eq!(columns[1].as_ref().unwrap().null_count(), 1);
//! // A string where a number belongs is for the exact decoder to judge.
//! let values = BinaryArray::from_iter([Some(&br#"{"metric":"1.5"}"#[..])]);
//! assert!(sql::json_fast::decode_projected(&schema, &[false, true], &values).is_none());
//! ```

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, ArrowPrimitiveType, BinaryArray, BooleanBuilder, PrimitiveArray,
    StringBuilder, StringViewArray, make_array,
};
use arrow::datatypes::{DataType, Float32Type, Float64Type, Int32Type, Int64Type, SchemaRef};

/// The deepest nesting of arrays and objects skipped inside an unknown key; deeper values are
/// rare in events and go to the exact decoder rather than deepen this one's stack.
pub const NESTING_MAX: usize = 64;

/// The most schema fields this decoder tracks per object (one bit each).
pub const FIELDS_MAX: usize = 128;

/// Decodes `values` (one JSON object per row; NULL for a tombstone) into `schema`'s columns:
/// `Some(column)` for each field `wanted`, `None` for the others. `None` overall when some
/// value or field type is outside the happy subset (see the module docs).
pub fn decode_projected(
    schema: &SchemaRef,
    wanted: &[bool],
    values: &BinaryArray,
) -> Option<Vec<Option<ArrayRef>>> {
    let data = values.value_data();
    let offsets = values.value_offsets();
    let mut decoder = RowDecoder::new(schema, wanted, values.len(), data.len())?;
    for row in 0..values.len() {
        let value = values
            .is_valid(row)
            .then(|| &data[offsets[row] as usize..offsets[row + 1] as usize]);
        if !decoder.push(value) {
            return None;
        }
    }
    decoder.finish()
}

/// Decodes values one at a time as they come (while they are still in the CPU's cache), into
/// columns handed out by [`RowDecoder::finish`].
pub struct RowDecoder {
    schema: SchemaRef,
    wanted: Vec<bool>,
    decoder: ObjectDecoder,
    /// A value outside the happy subset came since the last finish.
    failed: bool,
    /// Values pushed since the last finish.
    rows: usize,
}

impl RowDecoder {
    /// A decoder of `schema`'s fields, making columns for those `wanted`, with room for `rows`
    /// values of about `bytes` in all. `None` if some field is of a type it does not handle.
    pub fn new(
        schema: &SchemaRef,
        wanted: &[bool],
        rows: usize,
        bytes: usize,
    ) -> Option<RowDecoder> {
        let fields = schema.fields();
        if fields.len() != wanted.len() || fields.len() > FIELDS_MAX {
            return None;
        }
        let mut kinds = Vec::with_capacity(fields.len());
        for (at, field) in fields.iter().enumerate() {
            let duplicate = fields[..at]
                .iter()
                .any(|other| other.name() == field.name());
            if !field.is_nullable() || duplicate {
                return None;
            }
            kinds.push(Kind::of(field.data_type())?);
        }
        let names: Vec<Vec<u8>> = fields
            .iter()
            .map(|field| field.name().as_bytes().to_vec())
            .collect();
        let keys = names.iter().map(|name| KeyPattern::of(name)).collect();
        let mut decoder = RowDecoder {
            schema: Arc::clone(schema),
            wanted: wanted.to_vec(),
            decoder: ObjectDecoder {
                successor: vec![NO_FIELD; names.len() + 1],
                keys,
                names,
                kinds,
                columns: Vec::new(),
                wanted: wanted
                    .iter()
                    .enumerate()
                    .fold(0, |bits, (field, &wanted)| bits | (wanted as u128) << field),
                scratch: Vec::new(),
            },
            failed: false,
            rows: 0,
        };
        decoder.reset(rows, bytes);
        Some(decoder)
    }

    fn reset(&mut self, rows: usize, bytes: usize) {
        let text_bytes = bytes / 2;
        self.decoder.columns = self
            .decoder
            .kinds
            .iter()
            .zip(&self.wanted)
            .map(|(&kind, &wanted)| wanted.then(|| Column::new(kind, rows, text_bytes)))
            .collect();
        self.failed = false;
        self.rows = 0;
    }

    /// Decodes one value (`None`: a NULL slot, a row of NULLs). False once some value since
    /// the last finish was outside the happy subset: the run is then for the exact decoder,
    /// and later values are not looked at.
    #[inline]
    pub fn push(&mut self, value: Option<&[u8]>) -> bool {
        if self.failed {
            return false;
        }
        self.rows += 1;
        let decoded = match value {
            Some(value) => self.decoder.decode(value).is_some(),
            None => {
                self.decoder.append_nulls(0);
                true
            }
        };
        self.failed = !decoded;
        decoded
    }

    /// The columns of the values pushed since the last finish (`None` for fields not wanted),
    /// or `None` if one of them failed; the decoder then starts over, with room for as many.
    pub fn finish(&mut self) -> Option<Vec<Option<ArrayRef>>> {
        let (failed, rows) = (self.failed, self.rows);
        let columns = std::mem::take(&mut self.decoder.columns);
        self.reset(rows.max(1), rows * 32);
        if failed {
            return None;
        }
        columns
            .into_iter()
            .zip(self.schema.fields().iter())
            .map(|(column, field)| match column {
                Some(column) => column.finish(field.data_type()).map(Some),
                None => Some(None),
            })
            .collect()
    }
}

/// A field type the decoder handles.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Utf8,
    /// Text as string views (the table's type for text fields): built as views directly,
    /// short ones inline, instead of a `Utf8` column cast afterwards.
    Utf8View,
    Int64,
    Int32,
    Float64,
    Float32,
    Boolean,
    /// An `Int64` underneath, of the field's exact timestamp type.
    Timestamp,
}

impl Kind {
    fn of(data_type: &DataType) -> Option<Kind> {
        Some(match data_type {
            DataType::Utf8 => Kind::Utf8,
            DataType::Utf8View => Kind::Utf8View,
            DataType::Int64 => Kind::Int64,
            DataType::Int32 => Kind::Int32,
            DataType::Float64 => Kind::Float64,
            DataType::Float32 => Kind::Float32,
            DataType::Boolean => Kind::Boolean,
            // arrow-json parses the zone when it builds its decoder; only these are sure to.
            DataType::Timestamp(_, None) => Kind::Timestamp,
            DataType::Timestamp(_, Some(zone)) if zone.as_ref() == "UTC" => Kind::Timestamp,
            _ => return None,
        })
    }
}

enum Column {
    Utf8(StringBuilder),
    Utf8View(TextViews),
    Int64(Numbers<Int64Type>),
    Int32(Numbers<Int32Type>),
    Float64(Numbers<Float64Type>),
    Float32(Numbers<Float32Type>),
    Boolean(BooleanBuilder),
}

impl Column {
    fn new(kind: Kind, rows: usize, text_bytes: usize) -> Column {
        match kind {
            Kind::Utf8 => Column::Utf8(StringBuilder::with_capacity(rows, text_bytes)),
            Kind::Utf8View => Column::Utf8View(TextViews::with_capacity(rows)),
            Kind::Int64 | Kind::Timestamp => Column::Int64(Numbers::with_capacity(rows)),
            Kind::Int32 => Column::Int32(Numbers::with_capacity(rows)),
            Kind::Float64 => Column::Float64(Numbers::with_capacity(rows)),
            Kind::Float32 => Column::Float32(Numbers::with_capacity(rows)),
            Kind::Boolean => Column::Boolean(BooleanBuilder::with_capacity(rows)),
        }
    }

    fn append_null(&mut self) {
        match self {
            Column::Utf8(builder) => builder.append_null(),
            Column::Utf8View(builder) => builder.append_null(),
            Column::Int64(builder) => builder.append_null(),
            Column::Int32(builder) => builder.append_null(),
            Column::Float64(builder) => builder.append_null(),
            Column::Float32(builder) => builder.append_null(),
            Column::Boolean(builder) => builder.append_null(),
        }
    }

    fn finish(mut self, data_type: &DataType) -> Option<ArrayRef> {
        let array: ArrayRef = match &mut self {
            Column::Utf8(builder) => Arc::new(builder.finish()),
            Column::Utf8View(views) => Arc::new(views.finish()),
            Column::Int64(builder) => Arc::new(builder.finish()),
            Column::Int32(builder) => Arc::new(builder.finish()),
            Column::Float64(builder) => Arc::new(builder.finish()),
            Column::Float32(builder) => Arc::new(builder.finish()),
            Column::Boolean(builder) => Arc::new(builder.finish()),
        };
        if array.data_type() == data_type {
            return Some(array);
        }
        // Timestamps: the same i64s under the field's type.
        let data = array
            .into_data()
            .into_builder()
            .data_type(data_type.clone());
        data.build().ok().map(make_array)
    }
}

/// A column of numbers: the values and, once there is a NULL, a validity bitmap (appended to
/// inline, unlike arrow's generic builder, whose calls stay calls in the decoding loop).
struct Numbers<T: ArrowPrimitiveType> {
    values: Vec<T::Native>,
    nulls: arrow::array::builder::NullBufferBuilder,
}

impl<T: ArrowPrimitiveType> Numbers<T> {
    fn with_capacity(rows: usize) -> Numbers<T> {
        Numbers {
            values: Vec::with_capacity(rows),
            nulls: arrow::array::builder::NullBufferBuilder::new(rows),
        }
    }

    #[inline]
    fn append_value(&mut self, value: T::Native) {
        self.values.push(value);
        self.nulls.append_non_null();
    }

    fn append_null(&mut self) {
        self.values.push(T::Native::default());
        self.nulls.append_null();
    }

    fn finish(&mut self) -> PrimitiveArray<T> {
        let values = std::mem::take(&mut self.values);
        PrimitiveArray::new(values.into(), self.nulls.finish())
    }
}

/// A string view column built directly: text of up to 12 bytes inline in its view, longer text
/// copied into data blocks. The text is UTF-8, checked by `scan_string`.
struct TextViews {
    views: Vec<u128>,
    blocks: Vec<arrow::buffer::Buffer>,
    block: Vec<u8>,
    nulls: arrow::array::builder::NullBufferBuilder,
}

impl TextViews {
    fn with_capacity(rows: usize) -> TextViews {
        TextViews {
            views: Vec::with_capacity(rows),
            blocks: Vec::new(),
            block: Vec::new(),
            nulls: arrow::array::builder::NullBufferBuilder::new(rows),
        }
    }

    fn append_null(&mut self) {
        self.views.push(0);
        self.nulls.append_null();
    }

    /// Appends `length` bytes of `value` from `start`, read a word at a time when short.
    #[inline]
    fn append_raw(&mut self, value: &[u8], start: usize, length: usize) {
        match value.get(start..start + 12) {
            Some(window) if length <= 12 => {
                let low = u64::from_le_bytes(window[..8].try_into().unwrap()) as u128;
                let high = u32::from_le_bytes(window[8..].try_into().unwrap()) as u128;
                let mask = (1u128 << (8 * length)) - 1;
                self.views
                    .push(((low | high << 64) & mask) << 32 | length as u128);
                self.nulls.append_non_null();
            }
            _ => self.append(&value[start..start + length]),
        }
    }

    fn append(&mut self, text: &[u8]) {
        if text.len() > 12 && self.block.len() + text.len() > u32::MAX as usize {
            let full = std::mem::take(&mut self.block);
            self.blocks.push(arrow::buffer::Buffer::from_vec(full));
        }
        let offset = self.block.len() as u32;
        if text.len() > 12 {
            self.block.extend_from_slice(text);
        }
        let view = arrow::array::builder::make_view(text, self.blocks.len() as u32, offset);
        self.views.push(view);
        self.nulls.append_non_null();
    }

    fn finish(&mut self) -> StringViewArray {
        let mut blocks = std::mem::take(&mut self.blocks);
        if !self.block.is_empty() {
            blocks.push(arrow::buffer::Buffer::from_vec(std::mem::take(
                &mut self.block,
            )));
        }
        let views = std::mem::take(&mut self.views).into();
        // SAFETY: each view is `make_view`'s for its text, or the same bits built in
        // `append_raw` (length, then the bytes, zero past them); long text lies whole in the
        // block the view names, at its offset; every text is UTF-8 (`scan_string`); NULL
        // slots are zero views.
        unsafe { StringViewArray::new_unchecked(views, blocks, self.nulls.finish()) }
    }
}

/// No field: a prediction not made yet.
const NO_FIELD: usize = usize::MAX;

/// Decodes one object per call into the columns.
struct ObjectDecoder {
    names: Vec<Vec<u8>>,
    /// Each field's key as it appears unescaped, if its name needs no escape.
    keys: Vec<Option<KeyPattern>>,
    /// The field whose key came after field `i` last time (`successor[names.len()]`: the first
    /// key of the object); only fields with a [`KeyPattern`]. The values of a topic mostly
    /// list their keys in one order, so a key is mostly found by comparing it with one
    /// pattern, without scanning it first.
    successor: Vec<usize>,
    kinds: Vec<Kind>,
    columns: Vec<Option<Column>>,
    /// A bit for each field with a column.
    wanted: u128,
    /// Unescaped text of the current key or string.
    scratch: Vec<u8>,
}

impl ObjectDecoder {
    /// Appends NULL to every wanted column whose bit is not in `seen`.
    fn append_nulls(&mut self, seen: u128) {
        for (field, column) in self.columns.iter_mut().enumerate() {
            if let Some(column) = column
                && seen & (1 << field) == 0
            {
                column.append_null();
            }
        }
    }

    fn field_of(&self, key: &[u8]) -> Option<usize> {
        self.names.iter().position(|name| same_bytes(name, key))
    }

    /// The predicted field and where its key's closing quote is, if the key whose text starts
    /// at `start` is the one that came after field `previous` last time.
    #[inline]
    fn predicted(&self, value: &[u8], start: usize, previous: usize) -> Option<(usize, usize)> {
        let field = self.successor[previous];
        let key = self.keys.get(field)?.as_ref()?;
        key.matches(value, start)
            .then_some((field, start + key.pattern.len() - 1))
    }

    fn decode(&mut self, value: &[u8]) -> Option<()> {
        let mut at = skip_whitespace(value, 0);
        if value.get(at) != Some(&b'{') {
            return None;
        }
        at = skip_whitespace(value, at + 1);
        let mut seen: u128 = 0;
        if value.get(at) == Some(&b'}') {
            at += 1;
        } else {
            let mut previous = self.names.len();
            loop {
                if value.get(at) != Some(&b'"') {
                    return None;
                }
                let (field, key_end) = match self.predicted(value, at + 1, previous) {
                    Some((field, end)) => (Some(field), end),
                    None => {
                        let key = scan_string(value, at + 1)?;
                        let field = if key.escaped {
                            unescape(&value[at + 1..key.end], &mut self.scratch);
                            self.field_of(&self.scratch)
                        } else {
                            self.field_of(&value[at + 1..key.end])
                        };
                        if let Some(field) = field
                            && self.keys[field].is_some()
                        {
                            self.successor[previous] = field;
                        }
                        (field, key.end)
                    }
                };
                if let Some(field) = field {
                    previous = field;
                }
                at = skip_whitespace(value, key_end + 1);
                if value.get(at) != Some(&b':') {
                    return None;
                }
                at = skip_whitespace(value, at + 1);
                at = match field {
                    Some(field) => {
                        // arrow-json keeps the last of repeated fields and checks only it.
                        if seen & (1 << field) != 0 {
                            return None;
                        }
                        seen |= 1 << field;
                        self.decode_field(value, at, field)?
                    }
                    None => skip_value(value, at, 0)?,
                };
                at = skip_whitespace(value, at);
                match value.get(at) {
                    Some(b',') => at = skip_whitespace(value, at + 1),
                    Some(b'}') => {
                        at += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        if skip_whitespace(value, at) != value.len() {
            return None;
        }
        if seen & self.wanted != self.wanted {
            self.append_nulls(seen);
        }
        Some(())
    }

    /// Decodes the value at `at` of schema field `field`; returns where it ends.
    fn decode_field(&mut self, value: &[u8], at: usize, field: usize) -> Option<usize> {
        let column = self.columns[field].as_mut();
        if value.get(at) == Some(&b'n') {
            let end = literal(value, at, b"null")?;
            if let Some(column) = column {
                column.append_null();
            }
            return Some(end);
        }
        match self.kinds[field] {
            Kind::Utf8 | Kind::Utf8View => {
                if value.get(at) != Some(&b'"') {
                    return None;
                }
                let text = scan_string(value, at + 1)?;
                if let Some(column) = column {
                    let raw = &value[at + 1..text.end];
                    let bytes = if text.escaped {
                        unescape(raw, &mut self.scratch);
                        &self.scratch[..]
                    } else {
                        raw
                    };
                    // SAFETY: `scan_string` checked the raw text is UTF-8 and every escape
                    // stands for a whole scalar value.
                    let string = unsafe { std::str::from_utf8_unchecked(bytes) };
                    match column {
                        Column::Utf8(builder) => builder.append_value(string),
                        Column::Utf8View(views) if !text.escaped => {
                            views.append_raw(value, at + 1, raw.len())
                        }
                        Column::Utf8View(views) => views.append(bytes),
                        _ => unreachable!("a text field has a text column"),
                    }
                }
                Some(text.end + 1)
            }
            Kind::Int64 | Kind::Timestamp | Kind::Int32 => {
                let number = scan_number(value, at)?;
                let integer = number.integer()?;
                match column {
                    Some(Column::Int64(builder)) => builder.append_value(integer),
                    Some(Column::Int32(builder)) => {
                        builder.append_value(i32::try_from(integer).ok()?)
                    }
                    _ if self.kinds[field] == Kind::Int32 => {
                        i32::try_from(integer).ok()?;
                    }
                    _ => {}
                }
                Some(number.end)
            }
            Kind::Float64 => {
                let number = scan_number(value, at)?;
                if let Some(Column::Float64(builder)) = column {
                    builder.append_value(number.to_f64(value, at));
                }
                Some(number.end)
            }
            Kind::Float32 => {
                let number = scan_number(value, at)?;
                if let Some(Column::Float32(builder)) = column {
                    // SAFETY: `scan_number` checked the span is a JSON number, ASCII.
                    let text = unsafe { std::str::from_utf8_unchecked(&value[at..number.end]) };
                    builder.append_value(text.parse::<f32>().ok()?);
                }
                Some(number.end)
            }
            Kind::Boolean => {
                let (flag, end) = match value.get(at) {
                    Some(b't') => (true, literal(value, at, b"true")?),
                    Some(b'f') => (false, literal(value, at, b"false")?),
                    _ => return None,
                };
                if let Some(Column::Boolean(builder)) = column {
                    builder.append_value(flag);
                }
                Some(end)
            }
        }
    }
}

/// A field's name and the closing quote, as a key's raw text is when it is that name without
/// escapes: compared a word or two at a time.
struct KeyPattern {
    pattern: Vec<u8>,
    /// The first eight bytes (zero past the end), the last eight, and which bytes of the first
    /// word are the pattern's.
    head: u64,
    tail: u64,
    head_mask: u64,
}

impl KeyPattern {
    /// `None` for a name with a byte JSON must escape (a key with that name never matches
    /// its raw bytes).
    fn of(name: &[u8]) -> Option<KeyPattern> {
        if name
            .iter()
            .any(|&byte| byte < 0x20 || byte == b'"' || byte == b'\\')
        {
            return None;
        }
        let mut pattern = name.to_vec();
        pattern.push(b'"');
        let mut head = [0; 8];
        let first = pattern.len().min(8);
        head[..first].copy_from_slice(&pattern[..first]);
        let tail = pattern
            .len()
            .checked_sub(8)
            .map_or(0, |at| word(&pattern, at));
        Some(KeyPattern {
            head: u64::from_le_bytes(head),
            tail,
            head_mask: u64::MAX >> (64 - 8 * first),
            pattern,
        })
    }

    /// Whether the text at `start` begins with the pattern.
    #[inline]
    fn matches(&self, value: &[u8], start: usize) -> bool {
        let length = self.pattern.len();
        if length <= 8 {
            if start + 8 <= value.len() {
                return word(value, start) & self.head_mask == self.head;
            }
        } else if length <= 16 && start + length <= value.len() {
            return word(value, start) == self.head && word(value, start + length - 8) == self.tail;
        }
        value.get(start..start + length) == Some(&self.pattern[..])
    }
}

/// The eight bytes at `at` as a little-endian word.
#[inline]
fn word(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
}

/// `a == b`, without a call to `memcmp` for the short names of fields.
#[inline]
fn same_bytes(mut a: &[u8], mut b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    while a.len() >= 8 {
        let (a_head, a_tail) = a.split_at(8);
        let (b_head, b_tail) = b.split_at(8);
        if u64::from_ne_bytes(a_head.try_into().unwrap())
            != u64::from_ne_bytes(b_head.try_into().unwrap())
        {
            return false;
        }
        (a, b) = (a_tail, b_tail);
    }
    let mut equal = true;
    for (x, y) in a.iter().zip(b) {
        equal &= x == y;
    }
    equal
}

#[inline]
fn is_whitespace(byte: u8) -> bool {
    matches!(byte, b' ' | b'\n' | b'\r' | b'\t')
}

#[inline]
fn skip_whitespace(value: &[u8], mut at: usize) -> usize {
    while at < value.len() && is_whitespace(value[at]) {
        at += 1;
    }
    at
}

/// Where the literal `word` at `at` ends.
#[inline]
fn literal(value: &[u8], at: usize, word: &[u8]) -> Option<usize> {
    let end = at + word.len();
    (value.get(at..end)? == word).then_some(end)
}

/// Bytes that end the plain run of a string: `"`, `\`, control characters and non-ASCII.
static STRING_SPECIAL: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 256 {
        table[byte] =
            byte < 0x20 || byte >= 0x80 || byte == b'"' as usize || byte == b'\\' as usize;
        byte += 1;
    }
    table
};

const LOW_BITS: u64 = 0x0101_0101_0101_0101;
const HIGH_BITS: u64 = 0x8080_8080_8080_8080;

/// The high bit of each byte of `word` that is special in a string (as [`STRING_SPECIAL`]).
/// Bits above the lowest may be spurious (a borrow runs on past a true match); the lowest one
/// is exact.
#[inline]
fn special_bytes(word: u64) -> u64 {
    let zero_bytes = |v: u64| v.wrapping_sub(LOW_BITS) & !v & HIGH_BITS;
    let quote = zero_bytes(word ^ (LOW_BITS * b'"' as u64));
    let backslash = zero_bytes(word ^ (LOW_BITS * b'\\' as u64));
    let control = word.wrapping_sub(LOW_BITS * 0x20) & !word & HIGH_BITS;
    quote | backslash | control | (word & HIGH_BITS)
}

/// Where the plain run of a string from `at` ends: the first special byte, or the end.
#[inline]
fn plain_run_end(value: &[u8], mut at: usize) -> usize {
    // Eight bytes at a time while eight remain.
    while let Some(chunk) = value.get(at..at + 8) {
        let special = special_bytes(u64::from_le_bytes(chunk.try_into().unwrap()));
        if special != 0 {
            return at + (special.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    while at < value.len() && !STRING_SPECIAL[value[at] as usize] {
        at += 1;
    }
    at
}

struct ScannedString {
    /// The index of the closing quote.
    end: usize,
    escaped: bool,
}

/// Checks the string whose text starts at `at` (after the opening quote): valid escapes, whole
/// surrogate pairs, no control characters, valid UTF-8.
#[inline]
fn scan_string(value: &[u8], start: usize) -> Option<ScannedString> {
    let mut at = start;
    let mut escaped = false;
    let mut non_ascii = false;
    loop {
        at = plain_run_end(value, at);
        match *value.get(at)? {
            b'"' => break,
            b'\\' => {
                escaped = true;
                at = scan_escape(value, at + 1)?;
            }
            byte if byte >= 0x80 => {
                non_ascii = true;
                at += 1;
            }
            _ => return None,
        }
    }
    // Escapes are ASCII, so they cannot split a multi-byte character of valid text.
    if non_ascii {
        std::str::from_utf8(&value[start..at]).ok()?;
    }
    Some(ScannedString { end: at, escaped })
}

/// Checks the escape whose letter is at `at`; returns where it ends.
#[inline]
fn scan_escape(value: &[u8], at: usize) -> Option<usize> {
    match *value.get(at)? {
        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Some(at + 1),
        b'u' => {
            let unit = hex4(value, at + 1)?;
            match unit {
                // A high surrogate only as the first half of a pair.
                0xD800..=0xDBFF => surrogate_pair(value, at - 1).map(|_| at + 11),
                // A low surrogate alone.
                0xDC00..=0xDFFF => None,
                _ => Some(at + 5),
            }
        }
        _ => None,
    }
}

fn hex4(value: &[u8], at: usize) -> Option<u32> {
    let mut unit = 0;
    for &byte in value.get(at..at + 4)? {
        unit = unit << 4 | (byte as char).to_digit(16)?;
    }
    Some(unit)
}

/// The character an escaped surrogate pair `\\uD83D\\uDE00` at `at` (its backslash) stands for.
fn surrogate_pair(value: &[u8], at: usize) -> Option<char> {
    if value.get(at + 1) != Some(&b'u') || value.get(at + 6..at + 8) != Some(b"\\u") {
        return None;
    }
    let (high, low) = (hex4(value, at + 2)?, hex4(value, at + 8)?);
    if !(0xD800..=0xDBFF).contains(&high) || !(0xDC00..=0xDFFF).contains(&low) {
        return None;
    }
    char::from_u32(0x1_0000 + ((high - 0xD800) << 10) + (low - 0xDC00))
}

/// Appends the JSON text `value` to `out` with each escaped surrogate pair written as its
/// character's UTF-8 bytes, which means the same. For arrow-json 58, which joins a pair as
/// `(high - 0xD800) << 10 | (low - 0xDC00 + 0x10000)`: right only while the two terms share
/// no bit, up to high 0xD83F (plane 1, emoji among them); `\\uD840\\uDC00` came out as
/// U+10000, not U+20000.
pub(crate) fn push_with_pairs_joined(value: &[u8], out: &mut Vec<u8>) {
    let mut copied = 0;
    let mut at = 0;
    while let Some(found) = value[at..].iter().position(|&byte| byte == b'\\') {
        let slash = at + found;
        match surrogate_pair(value, slash) {
            Some(character) => {
                out.extend_from_slice(&value[copied..slash]);
                out.extend_from_slice(character.encode_utf8(&mut [0; 4]).as_bytes());
                at = slash + 12;
                copied = at;
            }
            // Any other escape: its letter (maybe a backslash) is not the start of another.
            None => at = (slash + 2).min(value.len()),
        }
    }
    out.extend_from_slice(&value[copied..]);
}

/// The text of `raw` (checked by `scan_string`) with its escapes resolved, into `out`.
fn unescape(raw: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let mut at = 0;
    while at < raw.len() {
        let byte = raw[at];
        if byte != b'\\' {
            out.push(byte);
            at += 1;
            continue;
        }
        let resolved = match raw[at + 1] {
            b'b' => 8,
            b'f' => 12,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => {
                let unit = hex4(raw, at + 2).expect("checked escape");
                let (scalar, length) = if (0xD800..=0xDBFF).contains(&unit) {
                    (surrogate_pair(raw, at).expect("checked surrogate pair"), 12)
                } else {
                    (char::from_u32(unit).expect("checked scalar value"), 6)
                };
                out.extend_from_slice(scalar.encode_utf8(&mut [0; 4]).as_bytes());
                at += length;
                continue;
            }
            other => other,
        };
        out.push(resolved);
        at += 2;
    }
}

/// A JSON number, scanned.
struct ScannedNumber {
    end: usize,
    negative: bool,
    /// All the digits, integer and fraction, as one integer, when they are at most 19 (so they
    /// fit); `None` for longer numbers.
    mantissa: Option<u64>,
    /// Whether there was a fraction or an exponent.
    decimal: bool,
    /// The power of ten to scale `mantissa` by (saturated far out of `f64` range).
    exponent: i64,
}

const POWERS_OF_TEN: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

impl ScannedNumber {
    /// The value as an `i64` when it is an integer in range (as arrow-json's integer parse).
    #[inline]
    fn integer(&self) -> Option<i64> {
        if self.decimal {
            return None;
        }
        let mantissa = self.mantissa?;
        if self.negative {
            0i64.checked_sub_unsigned(mantissa)
        } else {
            i64::try_from(mantissa).ok()
        }
    }

    /// The value as the correctly rounded `f64`, as arrow-json's parse gives it.
    #[inline]
    fn to_f64(&self, value: &[u8], start: usize) -> f64 {
        // Clinger's fast path: an exact mantissa and an exact power of ten round once.
        if let Some(mantissa) = self.mantissa
            && mantissa < 1 << 53
            && (-22..=22).contains(&self.exponent)
        {
            let mantissa = mantissa as f64;
            let scaled = if self.exponent >= 0 {
                mantissa * POWERS_OF_TEN[self.exponent as usize]
            } else {
                mantissa / POWERS_OF_TEN[-self.exponent as usize]
            };
            return if self.negative { -scaled } else { scaled };
        }
        // SAFETY: `scan_number` checked the span is a JSON number, ASCII.
        let text = unsafe { std::str::from_utf8_unchecked(&value[start..self.end]) };
        text.parse::<f64>().expect("a JSON number parses")
    }
}

/// Eight ASCII digits at `at`, as their number; `None` if the eight bytes are not all digits.
#[inline]
fn eight_digits(value: &[u8], at: usize) -> Option<u64> {
    let word = u64::from_le_bytes(value.get(at..at + 8)?.try_into().unwrap());
    // Each byte is 0x30..=0x39: its high half is 3, and adding 6 keeps it 3.
    let high_halves = 0xF0F0_F0F0_F0F0_F0F0;
    let digits = LOW_BITS * 0x30;
    if word & high_halves != digits || (word.wrapping_add(LOW_BITS * 6) & high_halves) != digits {
        return None;
    }
    // Pairs of digits, then fours, then all eight (the first byte is the most significant).
    let word = word - digits;
    let pairs = word.wrapping_mul(10).wrapping_add(word >> 8);
    let mask = 0x0000_00FF_0000_00FF;
    let fours = (pairs & mask)
        .wrapping_mul(100 + (1_000_000 << 32))
        .wrapping_add(((pairs >> 16) & mask).wrapping_mul(1 + (10_000 << 32)));
    Some(fours >> 32)
}

/// The run of ASCII digits from `at`, accumulated onto `mantissa` (wrapping: the caller counts
/// digits to know whether it fits); returns the new mantissa and where the run ends.
#[inline]
fn digits(value: &[u8], mut at: usize, mut mantissa: u64) -> (u64, usize) {
    while let Some(eight) = eight_digits(value, at) {
        mantissa = mantissa.wrapping_mul(100_000_000).wrapping_add(eight);
        at += 8;
    }
    while let Some(&byte) = value.get(at) {
        let digit = byte.wrapping_sub(b'0');
        if digit > 9 {
            break;
        }
        mantissa = mantissa.wrapping_mul(10).wrapping_add(digit as u64);
        at += 1;
    }
    (mantissa, at)
}

/// Scans the JSON number at `at`: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
#[inline]
fn scan_number(value: &[u8], start: usize) -> Option<ScannedNumber> {
    let negative = value.get(start) == Some(&b'-');
    let integer_start = start + negative as usize;
    let (mut mantissa, integer_end) = match *value.get(integer_start)? {
        b'0' => (0, integer_start + 1),
        b'1'..=b'9' => digits(value, integer_start, 0),
        _ => return None,
    };
    let mut at = integer_end;
    let mut decimal = false;
    let mut fraction_digits = 0;
    if value.get(at) == Some(&b'.') {
        decimal = true;
        let end;
        (mantissa, end) = digits(value, at + 1, mantissa);
        if end == at + 1 {
            return None;
        }
        fraction_digits = end - at - 1;
        at = end;
    }
    let mut exponent: i64 = 0;
    if let Some(b'e' | b'E') = value.get(at) {
        decimal = true;
        at += 1;
        let negative_exponent = match value.get(at) {
            Some(b'-') => {
                at += 1;
                true
            }
            Some(b'+') => {
                at += 1;
                false
            }
            _ => false,
        };
        let end = digits_end(value, at);
        if end == at {
            return None;
        }
        for &digit in &value[at..end] {
            exponent = (exponent * 10 + (digit - b'0') as i64).min(1 << 40);
        }
        if negative_exponent {
            exponent = -exponent;
        }
        at = end;
    }
    // Up to 19 digits fit a u64 (leading zeros included: they add nothing).
    let mantissa = (integer_end - integer_start + fraction_digits <= 19).then_some(mantissa);
    Some(ScannedNumber {
        end: at,
        negative,
        mantissa,
        decimal,
        exponent: exponent - fraction_digits as i64,
    })
}

/// Where the run of ASCII digits from `at` ends.
#[inline]
fn digits_end(value: &[u8], mut at: usize) -> usize {
    while at < value.len() && value[at].is_ascii_digit() {
        at += 1;
    }
    at
}

/// Checks the JSON value at `at` (of any type) and returns where it ends.
fn skip_value(value: &[u8], at: usize, depth: usize) -> Option<usize> {
    match *value.get(at)? {
        b'"' => Some(scan_string(value, at + 1)?.end + 1),
        b'-' | b'0'..=b'9' => Some(scan_number(value, at)?.end),
        b't' => literal(value, at, b"true"),
        b'f' => literal(value, at, b"false"),
        b'n' => literal(value, at, b"null"),
        open @ (b'[' | b'{') => {
            if depth >= NESTING_MAX {
                return None;
            }
            let close = if open == b'[' { b']' } else { b'}' };
            let mut at = skip_whitespace(value, at + 1);
            if value.get(at) == Some(&close) {
                return Some(at + 1);
            }
            loop {
                if open == b'{' {
                    if value.get(at) != Some(&b'"') {
                        return None;
                    }
                    at = skip_whitespace(value, scan_string(value, at + 1)?.end + 1);
                    if value.get(at) != Some(&b':') {
                        return None;
                    }
                    at = skip_whitespace(value, at + 1);
                }
                at = skip_whitespace(value, skip_value(value, at, depth + 1)?);
                match *value.get(at)? {
                    b',' => at = skip_whitespace(value, at + 1),
                    byte if byte == close => return Some(at + 1),
                    _ => return None,
                }
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{AsArray, RecordBatch};
    use arrow::datatypes::{Field, Float64Type, Schema, TimeUnit};
    use proptest::prelude::*;

    use super::*;

    /// One field of every handled type.
    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("s", DataType::Utf8, true),
            Field::new("i", DataType::Int64, true),
            Field::new("n", DataType::Int32, true),
            Field::new("f", DataType::Float64, true),
            Field::new("g", DataType::Float32, true),
            Field::new("b", DataType::Boolean, true),
            Field::new(
                "t",
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                true,
            ),
        ]))
    }

    fn binary(values: &[Option<&[u8]>]) -> BinaryArray {
        BinaryArray::from_iter(values.iter().copied())
    }

    /// What the exact decoder gives for the whole run, when every value decodes.
    fn exact(schema: &SchemaRef, values: &BinaryArray) -> Option<RecordBatch> {
        crate::format::decode_all(schema, false, values, None)
            .ok()
            .filter(|batch| batch.num_rows() == values.len())
    }

    /// Decodes `values` with every projection of one field and with all fields; whenever the
    /// fast path answers, its columns are the exact decoder's. Returns whether it answered.
    fn agrees(schema: &SchemaRef, values: &BinaryArray) -> bool {
        let fields = schema.fields().len();
        let all = decode_projected(schema, &vec![true; fields], values);
        let mut masks: Vec<Vec<bool>> = (0..fields)
            .map(|only| (0..fields).map(|field| field == only).collect())
            .collect();
        masks.push(vec![false; fields]);
        for mask in &masks {
            let some = decode_projected(schema, mask, values);
            assert_eq!(
                some.is_some(),
                all.is_some(),
                "projection {mask:?} changed the answer"
            );
            if let Some(columns) = some {
                for (field, column) in columns.iter().enumerate() {
                    assert_eq!(column.is_some(), mask[field]);
                }
            }
        }
        // Text decoded as string views (the table's type) answers alike, with the same text.
        let views = Arc::new(Schema::new(
            schema
                .fields()
                .iter()
                .map(|field| match field.data_type() {
                    DataType::Utf8 => field.as_ref().clone().with_data_type(DataType::Utf8View),
                    _ => field.as_ref().clone(),
                })
                .collect::<Vec<_>>(),
        ));
        let as_views = decode_projected(&views, &vec![true; fields], values);
        assert_eq!(
            as_views.is_some(),
            all.is_some(),
            "string views changed the answer"
        );
        let Some(columns) = all else {
            return false;
        };
        for (column, view) in columns.iter().zip(as_views.unwrap()) {
            let (column, view) = (column.as_ref().unwrap(), view.unwrap());
            if column.data_type() == &DataType::Utf8 {
                assert_eq!(view.data_type(), &DataType::Utf8View);
                let text = arrow::compute::cast(&view, &DataType::Utf8).unwrap();
                assert_eq!(text.to_data(), column.to_data());
            } else {
                assert_eq!(view.to_data(), column.to_data());
            }
        }
        let batch = exact(schema, values).expect("the exact decoder takes what the fast one does");
        for (field, column) in columns.iter().enumerate() {
            let column = column.as_ref().expect("wanted");
            let expected = batch.column(field);
            assert_eq!(
                column.to_data(),
                expected.to_data(),
                "field {}: fast {column:?} exact {expected:?}",
                schema.field(field).name()
            );
            // ArrayData equality of floats is by value in places; the bits must match too.
            if let DataType::Float64 = column.data_type() {
                let bits = |array: &ArrayRef| -> Vec<Option<u64>> {
                    let array = array.as_primitive::<Float64Type>();
                    array.iter().map(|v| v.map(f64::to_bits)).collect()
                };
                assert_eq!(bits(column), bits(expected));
            }
        }
        true
    }

    fn check(value: &str, taken: bool) {
        check_bytes(value.as_bytes(), taken);
    }

    fn check_bytes(value: &[u8], taken: bool) {
        let values = binary(&[Some(value)]);
        let answered = agrees(&schema(), &values);
        assert_eq!(
            answered,
            taken,
            "{:?}: the fast path {}",
            String::from_utf8_lossy(value),
            if answered { "answered" } else { "fell back" }
        );
    }

    #[test]
    fn objects_of_the_happy_subset_decode_as_arrow_json_does() {
        for value in [
            "{}",
            " {} ",
            "\t{\"s\" : \"a\" ,\"i\":1}\r\n",
            r#"{"s":"a","i":-7,"n":3,"f":1.5,"g":2.25,"b":true,"t":1700000000123}"#,
            r#"{"s":null,"i":null,"n":null,"f":null,"g":null,"b":null,"t":null}"#,
            r#"{"b":false}"#,
            // Escapes, surrogate pairs, NUL, raw UTF-8.
            r#"{"s":"a\"b\\c\/d\b\f\n\r\t"}"#,
            r#"{"s":"\u0041\u00e9\u20AC\ud83d\ude00"}"#,
            r#"{"s":"\u0000"}"#,
            r#"{"s":"\ud800\udc00\uD83F\uDFFF"}"#,
            r#"{"s":"héllo €😀"}"#,
            r#"{"s":""}"#,
            // Keys compare unescaped; unknown keys may repeat.
            r#"{"\u0073":"x"}"#,
            r#"{"\u00e9":1,"é":2}"#,
            r#"{"x":1,"x":"two"}"#,
            r#"{"S":1,"ss":2,"":3}"#,
            // Nested values under unknown keys.
            r#"{"x":{"a":[1,2,{"b":null}],"c":"d"},"s":"a"}"#,
            r#"{"x":[],"y":{},"z":[[[ ]]],"w":[{"s":1,"s":2}]}"#,
            r#"{"x":[true,false,null,-1.5e-3,"\ud83d\ude00"]}"#,
            // Numbers.
            r#"{"f":-0}"#,
            r#"{"f":-0.0}"#,
            r#"{"f":0}"#,
            r#"{"f":1E5,"g":1e5}"#,
            r#"{"f":1e+5,"g":1E-5}"#,
            r#"{"f":0.1,"g":0.1}"#,
            r#"{"f":0.30000000000000004}"#,
            r#"{"f":123456789012345678901234567890}"#,
            r#"{"f":9007199254740993}"#,
            r#"{"f":1.7976931348623157e308}"#,
            r#"{"f":4.9e-324}"#,
            r#"{"f":2.2250738585072011e-308}"#,
            r#"{"f":0.000000000000000000000000000001}"#,
            r#"{"f":1e22,"g":1e-22}"#,
            r#"{"f":1e23}"#,
            r#"{"f":1e400,"g":1e39}"#,
            r#"{"f":-1e400}"#,
            r#"{"f":1e-400,"g":1e-50}"#,
            r#"{"f":1e99999999999999999999}"#,
            r#"{"f":3.4028235e38,"g":3.4028235e38}"#,
            r#"{"g":1.00000017881393432617187499}"#,
            r#"{"g":16777217}"#,
            r#"{"i":9223372036854775807,"t":-9223372036854775808}"#,
            r#"{"i":-9223372036854775808}"#,
            r#"{"i":-0,"n":-0,"t":0}"#,
            r#"{"n":2147483647}"#,
            r#"{"n":-2147483648}"#,
            r#"{"x":01.5e999999999999999999999999}"#,
        ] {
            // The last one is not JSON (a leading zero) and stays with the exact decoder.
            check(value, !value.contains("01.5"));
        }
        // Nesting up to the limit.
        let deep = format!(
            "{{\"x\":{}{}}}",
            "[".repeat(NESTING_MAX),
            "]".repeat(NESTING_MAX)
        );
        check(&deep, true);
    }

    #[test]
    fn anything_else_falls_back_to_the_exact_decoder() {
        for value in [
            // Repeated schema fields (arrow-json would keep and check only the last).
            r#"{"s":"a","s":"b"}"#,
            r#"{"s":"a","\u0073":1}"#,
            r#"{"i":"x","i":1}"#,
            // Wrong types, which arrow-json coerces or rejects.
            r#"{"s":1}"#,
            r#"{"s":true}"#,
            r#"{"s":[]}"#,
            r#"{"s":{}}"#,
            r#"{"i":"1"}"#,
            r#"{"i":1.0}"#,
            r#"{"i":1e2}"#,
            r#"{"i":9223372036854775808}"#,
            r#"{"i":-9223372036854775809}"#,
            r#"{"i":12345678901234567890123}"#,
            r#"{"n":2147483648}"#,
            r#"{"n":-2147483649}"#,
            r#"{"t":"2024-01-01T00:00:00Z"}"#,
            r#"{"t":1.5}"#,
            r#"{"b":1}"#,
            r#"{"b":"true"}"#,
            r#"{"f":"1.5"}"#,
            r#"{"f":true}"#,
            r#"{"g":[1]}"#,
            // Not one object.
            "",
            "  ",
            "null",
            "[]",
            "1",
            r#""s""#,
            "{}x",
            "{}{}",
            "{} {}",
            r#"{"s":"a"}}"#,
            r#"{"s":"a"}]"#,
            // Syntax arrow-json forgives.
            r#"{"s":"a",}"#,
            r#"{,"s":"a"}"#,
            r#"{"s":"a",,"i":1}"#,
            r#"{"s":"a" "i":1}"#,
            r#"{"x":[1,]}"#,
            r#"{"x":[,1]}"#,
            r#"{"x":[1 2]}"#,
            r#"{"x":01}"#,
            r#"{"x":-01}"#,
            r#"{"f":01}"#,
            r#"{"x":1.}"#,
            r#"{"x":.5}"#,
            r#"{"x":1e}"#,
            r#"{"x":1e+}"#,
            r#"{"x":+1}"#,
            r#"{"x":-}"#,
            r#"{"x":1-2}"#,
            "{\"s\":\"a\tb\"}",
            "{\"x\":\"\n\"}",
            // Syntax nobody forgives.
            r#"{"s" "a"}"#,
            r#"{"s":}"#,
            r#"{s:"a"}"#,
            r#"{"x":tru}"#,
            r#"{"x":nul}"#,
            r#"{"x":nullx}"#,
            r#"{"b":truee}"#,
            r#"{"x":{"a"}}"#,
            r#"{"x":{"a":1,}}"#,
            r#"{"x":[}"#,
            r#"{"s":"a"#,
            r#"{"s":"#,
            r#"{"s":"a""#,
            r#"{"s""#,
            "{",
            // Bad escapes and surrogates, in fields and in skipped values.
            r#"{"s":"a\x"}"#,
            r#"{"s":"\u12"}"#,
            r#"{"s":"\u12g4"}"#,
            r#"{"s":"\ud83d"}"#,
            r#"{"s":"\ude00"}"#,
            r#"{"s":"\ud83d\u0041"}"#,
            r#"{"s":"\ud83d\n"}"#,
            r#"{"x":"\ud83d"}"#,
            r#"{"\ud83d":1}"#,
            // A low surrogate alone, in a field and in a skipped value.
            r#"{"s":"\udc00"}"#,
            r#"{"x":"\udfff\ud83d"}"#,
            r#"{"x":["\q"]}"#,
        ] {
            check(value, false);
        }
        // Invalid UTF-8 anywhere in a string, also where it is skipped.
        for value in [
            &b"{\"s\":\"\xff\"}"[..],
            b"{\"s\":\"\xc3\"}",
            b"{\"s\":\"\xc0\xaf\"}",
            b"{\"s\":\"\xed\xa0\x80\"}",
            b"{\"x\":\"\xc3\"}",
            b"{\"\xc3\":1}",
            b"{\"x\":[\"\xe2\x82\"]}",
            b"{\"s\":\"\xc3\\n\xa9\"}",
            b"{\"s\":\"a\"}\xff",
            b"\xef\xbb\xbf{}",
        ] {
            check_bytes(value, false);
        }
        // Nesting past the limit.
        let deep = format!(
            "{{\"x\":{}{}}}",
            "[".repeat(NESTING_MAX + 1),
            "]".repeat(NESTING_MAX + 1)
        );
        check(&deep, false);
    }

    /// Escaped surrogate pairs of every plane decode to their characters, on both paths.
    #[test]
    fn surrogate_pairs_of_every_plane_decode_right() {
        let text = r#"{"s":"\ud83d\ude00 \ud840\udc00\\ud840 \udbff\udfff","i":1}"#;
        let expected = "\u{1F600} \u{20000}\\ud840 \u{10FFFF}";
        let values = binary(&[Some(text.as_bytes())]);
        let batch = exact(&schema(), &values).unwrap();
        assert_eq!(batch.column(0).as_string::<i32>().value(0), expected);
        assert!(agrees(&schema(), &values), "the fast path takes them");
        let fast = decode_projected(&schema(), &[true; 7], &values).unwrap();
        let fast = fast[0].as_ref().unwrap();
        assert_eq!(fast.as_string::<i32>().value(0), expected);
        // A lone surrogate is not a character: an error, not a guess.
        for lone in [r#"{"s":"\ud840"}"#, r#"{"s":"\udc00\ud840"}"#] {
            assert!(
                exact(&schema(), &binary(&[Some(lone.as_bytes())])).is_none(),
                "{lone}"
            );
        }
    }

    /// Why `push_with_pairs_joined` exists: arrow-json alone joins pairs past plane 1 wrongly.
    /// When an upgrade makes this fail, the rewrite can go.
    #[test]
    fn arrow_json_alone_joins_pairs_past_plane_one_wrongly() {
        let mut decoder = arrow::json::ReaderBuilder::new(schema())
            .build_decoder()
            .unwrap();
        decoder.decode(br#"{"s":"\ud840\udc00"}"#).unwrap();
        let batch = decoder.flush().unwrap().unwrap();
        assert_eq!(batch.column(0).as_string::<i32>().value(0), "\u{10000}");
    }

    #[test]
    fn keys_found_by_prediction_are_the_keys_they_look_like() {
        // Each value learns the order of the one before; these break it in every way.
        let values: [&[u8]; 9] = [
            br#"{"s":"a","i":1,"f":1.5}"#,
            br#"{"s":"b","i":2,"f":2.5}"#,
            br#"{"f":3.5,"s":"c","i":3}"#,
            br#"{"s":"d","x":[1,{"i":9}],"i":4,"f":4.5}"#,
            br#"{"s":"e","ii":5,"i":5,"f":5.5}"#,
            br#"{"s":"f","i":6,"f":6.5}"#,
            br#"{"s" :"g", "i" :7 ,"f":7.5}"#,
            br#"{"s":"h","i":8,"i":8}"#,
            br#"{"s":"h","i":8,"f":9}"#,
        ];
        let mut taken = 0;
        for end in 1..=values.len() {
            for start in 0..end {
                let run = values[start..end].iter().map(|value| Some(*value));
                let run = BinaryArray::from_iter(run.collect::<Vec<_>>());
                taken += agrees(&schema(), &run) as usize;
            }
        }
        // Every run without the repeated `"i"` decodes fast.
        assert_eq!(taken, 7 * 8 / 2 + 1);
        let repeated = binary(&[Some(values[0]), Some(values[7])]);
        assert!(decode_projected(&schema(), &[true; 7], &repeated).is_none());
    }

    #[test]
    fn null_slots_are_rows_of_nulls_and_runs_decode_together() {
        let values = binary(&[
            Some(br#"{"s":"a","f":1.5,"i":1}"#),
            None,
            Some(br#"{"f":2,"x":[1]}"#),
            Some(b"{}"),
            Some(br#"{"i":3,"s":"c\u00e9"}"#),
        ]);
        assert!(agrees(&schema(), &values));
        let columns = decode_projected(&schema(), &[true; 7], &values).unwrap();
        let s = columns[0].as_ref().unwrap().as_string::<i32>();
        assert_eq!(
            s.iter().collect::<Vec<_>>(),
            [Some("a"), None, None, None, Some("cé")]
        );
        let f = columns[3].as_ref().unwrap().as_primitive::<Float64Type>();
        assert_eq!(
            f.iter().collect::<Vec<_>>(),
            [Some(1.5), None, Some(2.0), None, None]
        );
        // One bad value anywhere sends the whole run back.
        let values = binary(&[Some(br#"{"s":"a"}"#), None, Some(br#"{"s":2}"#)]);
        assert!(decode_projected(&schema(), &[true; 7], &values).is_none());
        // An empty run.
        assert!(agrees(&schema(), &binary(&[])));
    }

    #[test]
    fn a_projection_changes_neither_rows_nor_errors() {
        let format = crate::format::ValueFormat::Json {
            schema: schema(),
            strict: false,
        };
        let only_s = [true, false, false, false, false, false, false];
        for values in [
            binary(&[Some(br#"{"s":"a","i":"one"}"#), Some(br#"{"s":"b","i":2}"#)]),
            binary(&[
                Some(br#"{"s":"a","i":1}"#),
                None,
                Some(br#"{"s":"b","i":2}"#),
            ]),
        ] {
            let all = crate::format::decode(&format, &values).unwrap();
            let projected = crate::format::decode_wanted(&format, &values, Some(&only_s)).unwrap();
            assert_eq!(all.errors.to_data(), projected.errors.to_data());
            assert_eq!(all.columns[0].to_data(), projected.columns[0].to_data());
            assert_eq!(projected.columns.len(), 7);
            assert!(
                projected
                    .columns
                    .iter()
                    .all(|column| column.len() == values.len())
            );
        }
        let values = binary(&[Some(br#"{"s":"a","i":"one"}"#)]);
        let projected = crate::format::decode_wanted(&format, &values, Some(&only_s)).unwrap();
        assert!(
            !projected.errors.is_null(0),
            "the unwanted `i` is still checked"
        );
    }

    #[test]
    fn schemas_with_other_types_fall_back() {
        let values = binary(&[Some(b"{}")]);
        for data_type in [
            DataType::LargeUtf8,
            DataType::Int16,
            DataType::Date32,
            DataType::Timestamp(TimeUnit::Millisecond, Some("+01:00".into())),
        ] {
            let schema = Arc::new(Schema::new(vec![Field::new("a", data_type, true)]));
            assert!(decode_projected(&schema, &[false], &values).is_none());
        }
        let required = Arc::new(Schema::new(vec![Field::new("a", DataType::Utf8, false)]));
        assert!(decode_projected(&required, &[true], &values).is_none());
        let negative_zero = binary(&[Some(br#"{"f":-0}"#)]);
        let columns = decode_projected(&schema(), &[true; 7], &negative_zero).unwrap();
        let f = columns[3].as_ref().unwrap().as_primitive::<Float64Type>();
        assert!(f.value(0).is_sign_negative());
    }

    // Property tests: random JSON-ish values, valid or mutated.

    const SCHEMA_KEYS: [&str; 7] = ["s", "i", "n", "f", "g", "b", "t"];

    fn whitespace() -> impl Strategy<Value = &'static str> {
        prop_oneof![4 => Just(""), 1 => Just(" "), 1 => Just("\n"), 1 => Just("\t \r")]
    }

    fn number() -> impl Strategy<Value = String> {
        let digits = |range: std::ops::Range<usize>| {
            proptest::collection::vec(0u8..10, range).prop_map(|digits| {
                digits
                    .iter()
                    .map(|d| char::from(b'0' + d))
                    .collect::<String>()
            })
        };
        prop_oneof![
            any::<i64>().prop_map(|n| n.to_string()),
            any::<i32>().prop_map(|n| n.to_string()),
            any::<u64>().prop_map(|n| n.to_string()),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| format!("{f:?}")),
            any::<f32>().prop_map(|f| format!("{:e}", f)),
            (
                any::<bool>(),
                prop_oneof![
                    Just("0".to_string()),
                    (1u8..10, digits(0..25)).prop_map(|(d, rest)| format!("{d}{rest}"))
                ],
                proptest::option::of(digits(1..25)),
                proptest::option::of((
                    prop_oneof![Just("e"), Just("E")],
                    prop_oneof![Just(""), Just("+"), Just("-")],
                    digits(1..5)
                )),
            )
                .prop_map(|(negative, integer, fraction, exponent)| {
                    let mut text = String::new();
                    if negative {
                        text.push('-');
                    }
                    text.push_str(&integer);
                    if let Some(fraction) = fraction {
                        text.push('.');
                        text.push_str(&fraction);
                    }
                    if let Some((e, sign, digits)) = exponent {
                        text.push_str(e);
                        text.push_str(sign);
                        text.push_str(&digits);
                    }
                    text
                }),
        ]
    }

    /// A JSON string literal, quotes included; valid JSON.
    fn string() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            6 => proptest::char::range('a', 'z').prop_map(String::from),
            2 => any::<char>()
                .prop_filter("not special", |c| *c >= ' ' && *c != '"' && *c != '\\')
                .prop_map(String::from),
            1 => prop_oneof![
                Just("\\\""), Just("\\\\"), Just("\\/"), Just("\\b"), Just("\\f"), Just("\\n"),
                Just("\\r"), Just("\\t"), Just("\\u0000"), Just("\\u00e9"), Just("\\u20AC"),
                Just("\\ud83d\\ude00"), Just("\\uD800\\uDC00"), Just("\\uD83F\\uDFFF"),
                Just("\\uD840\\uDC00"), Just("\\uDBFF\\uDFFF"), Just("\\uD87E\\uDC04"),
                Just("\\u0073"),
            ]
            .prop_map(String::from),
        ];
        // Up to 20 pieces: text of both kinds of string view, inline (12 bytes or fewer) and not.
        proptest::collection::vec(piece, 0..20)
            .prop_map(|pieces| format!("\"{}\"", pieces.concat()))
    }

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => proptest::sample::select(&SCHEMA_KEYS[..]).prop_map(|key| format!("\"{key}\"")),
            1 => Just("\"\\u0073\"".to_string()),
            1 => Just("\"\\u0069\"".to_string()),
            2 => string(),
        ]
    }

    /// Any valid JSON value.
    fn json() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            Just("null".to_string()),
            Just("true".to_string()),
            Just("false".to_string()),
            number(),
            string(),
        ];
        leaf.prop_recursive(4, 24, 4, move |inner| {
            prop_oneof![
                proptest::collection::vec((whitespace(), inner.clone()), 0..4).prop_map(|items| {
                    let items: Vec<String> = items
                        .into_iter()
                        .map(|(space, item)| format!("{space}{item}"))
                        .collect();
                    format!("[{}]", items.join(","))
                }),
                proptest::collection::vec((key(), whitespace(), inner), 0..4).prop_map(|entries| {
                    let entries: Vec<String> = entries
                        .into_iter()
                        .map(|(key, space, value)| format!("{key}{space}:{value}"))
                        .collect();
                    format!("{{{}}}", entries.join(","))
                }),
            ]
        })
    }

    /// An object of the happy subset: each schema field at most once with a value of its type,
    /// unknown keys with any JSON.
    fn happy_object() -> impl Strategy<Value = String> {
        let typed = |field: usize| -> BoxedStrategy<String> {
            let value = match field {
                0 => string().boxed(),
                1 | 6 => any::<i64>().prop_map(|n| n.to_string()).boxed(),
                2 => any::<i32>().prop_map(|n| n.to_string()).boxed(),
                3 | 4 => number().boxed(),
                _ => any::<bool>().prop_map(|b| b.to_string()).boxed(),
            };
            prop_oneof![5 => value, 1 => Just("null".to_string())].boxed()
        };
        let fields: Vec<BoxedStrategy<Option<String>>> = (0..SCHEMA_KEYS.len())
            .map(|field| proptest::option::of(typed(field)).boxed())
            .collect();
        let unknown = proptest::collection::vec(
            (
                string().prop_filter("not a schema key", |key| {
                    let bare = &key[1..key.len() - 1];
                    !SCHEMA_KEYS.contains(&bare) && bare != "\\u0073"
                }),
                json(),
            ),
            0..3,
        );
        (
            fields,
            unknown,
            whitespace(),
            Just(()).prop_perturb(|_, mut rng| rng.random::<u64>()),
        )
            .prop_map(|(fields, unknown, space, seed)| {
                let mut entries: Vec<String> = fields
                    .iter()
                    .enumerate()
                    .filter_map(|(field, value)| {
                        value
                            .as_ref()
                            .map(|value| format!("\"{}\":{value}", SCHEMA_KEYS[field]))
                    })
                    .chain(unknown.iter().map(|(key, value)| format!("{key}:{value}")))
                    .collect();
                // A shuffle of the entries, from the seed.
                let len = entries.len();
                for at in 0..len {
                    let other = (seed.rotate_left(at as u32 * 7) as usize) % len;
                    entries.swap(at, other);
                }
                format!("{space}{{{}}}{space}", entries.join(&format!(",{space}")))
            })
    }

    /// A value that is mostly JSON, sometimes not, sometimes with bytes mutated.
    fn any_value() -> impl Strategy<Value = Option<Vec<u8>>> {
        let text = prop_oneof![
            4 => happy_object(),
            3 => proptest::collection::vec((key(), json()), 0..5).prop_map(|entries| {
                let entries: Vec<String> =
                    entries.into_iter().map(|(k, v)| format!("{k}:{v}")).collect();
                format!("{{{}}}", entries.join(","))
            }),
            1 => json(),
        ];
        let mutation = (
            any::<proptest::sample::Index>(),
            0u8..3,
            prop_oneof![
                Just(b'"'),
                Just(b'\\'),
                Just(b','),
                Just(b'}'),
                Just(b'{'),
                Just(b'0'),
                Just(b'.'),
                Just(b'e'),
                Just(b' '),
                Just(0xc3),
                Just(0xff),
                Just(b'\n'),
                Just(b'u'),
                Just(b'-'),
            ],
        );
        let mutated =
            (text, proptest::collection::vec(mutation, 0..3)).prop_map(|(text, mutations)| {
                let mut bytes = text.into_bytes();
                for (at, op, byte) in mutations {
                    if bytes.is_empty() {
                        break;
                    }
                    let at = at.index(bytes.len());
                    match op {
                        0 => {
                            bytes.remove(at);
                        }
                        1 => bytes.insert(at, byte),
                        _ => bytes[at] = byte,
                    }
                }
                bytes
            });
        prop_oneof![8 => mutated.prop_map(Some), 1 => Just(None)]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        #[test]
        fn word_scans_match_byte_scans(
            bytes in proptest::collection::vec(
                prop_oneof![
                    12 => b'0'..=b'9',
                    1 => Just(b'"'),
                    1 => Just(b'\\'),
                    1 => Just(b'.'),
                    2 => any::<u8>(),
                ],
                0..40,
            ),
            at in 0usize..40,
        ) {
            let at = at.min(bytes.len());
            let plain = at + bytes[at..].iter().take_while(|&&b| !STRING_SPECIAL[b as usize]).count();
            prop_assert_eq!(plain_run_end(&bytes, at), plain);
            let run = bytes[at..].iter().take_while(|b| b.is_ascii_digit()).count();
            let expected = bytes[at..at + run]
                .iter()
                .fold(0u64, |m, &d| m.wrapping_mul(10).wrapping_add((d - b'0') as u64));
            prop_assert_eq!(digits(&bytes, at, 0), (expected, at + run));
            let eight = bytes.get(at..at + 8).filter(|w| w.iter().all(u8::is_ascii_digit));
            prop_assert_eq!(
                eight_digits(&bytes, at),
                eight.map(|w| std::str::from_utf8(w).unwrap().parse::<u64>().unwrap())
            );
        }

        #[test]
        fn whenever_the_fast_path_answers_it_answers_as_arrow_json(
            values in proptest::collection::vec(any_value(), 0..6),
        ) {
            let values = BinaryArray::from_iter(values.iter().map(|value| value.as_deref()));
            agrees(&schema(), &values);
        }

        #[test]
        fn the_fast_path_takes_every_happy_object(
            values in proptest::collection::vec(proptest::option::weighted(0.9, happy_object()), 1..6),
        ) {
            let values = BinaryArray::from_iter(
                values.iter().map(|value| value.as_ref().map(String::as_bytes)),
            );
            prop_assert!(agrees(&schema(), &values), "fell back on {values:?}");
        }
    }
}
