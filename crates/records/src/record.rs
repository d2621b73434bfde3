//! The records inside an uncompressed v2 batch (or a decompressed records section), borrowed
//! from its bytes (no allocation).

use crate::{BATCH_HEADER_LEN, BatchHeader, Compression, RecordError};

/// One record of an uncompressed batch, borrowing its key, value and headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub attributes: i8,
    pub timestamp_delta: i64,
    pub offset_delta: i32,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub header_count: i32,
    headers: &'a [u8],
}

impl<'a> Record<'a> {
    pub fn headers(&self) -> HeaderIter<'a> {
        HeaderIter {
            bytes: self.headers,
            remaining: self.header_count,
        }
    }
}

/// A record header: the key is never null, the value may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    pub key: &'a [u8],
    pub value: Option<&'a [u8]>,
}

/// The headers of a [`Record`], already checked when the record was read.
#[derive(Debug, Clone)]
pub struct HeaderIter<'a> {
    bytes: &'a [u8],
    remaining: i32,
}

impl<'a> Iterator for HeaderIter<'a> {
    type Item = Header<'a>;

    fn next(&mut self) -> Option<Header<'a>> {
        if self.remaining <= 0 {
            return None;
        }
        self.remaining -= 1;
        let mut cursor = Cursor {
            bytes: self.bytes,
            position: 0,
        };
        let header = read_header(&mut cursor).ok()?;
        self.bytes = &self.bytes[cursor.position..];
        Some(header)
    }
}

/// The records of an uncompressed batch (`batch` starts at the batch header), each checked for
/// bounds as it is read; the iterator ends with an error if the bytes and `recordCount`
/// disagree. Does not check the CRC.
pub fn records(batch: &[u8]) -> Result<RecordIter<'_>, RecordError> {
    let header = BatchHeader::parse(batch)?;
    let total = header.total_len();
    if batch.len() < total {
        return Err(RecordError::Truncated {
            needed: total,
            available: batch.len(),
        });
    }
    let compression = header.compression()?;
    if compression != Compression::None {
        return Err(RecordError::Compressed { compression });
    }
    Ok(records_in_section(
        &batch[BATCH_HEADER_LEN..total],
        header.record_count,
    ))
}

/// The records of a records section: the bytes after a batch's 61-byte header, decompressed
/// if the batch is compressed (see [`crate::codecs`]). `record_count` is the batch header's;
/// the iterator ends with an error if the bytes and the count disagree.
///
/// ```
/// let batch = records::BatchBuilder::new(0).record(None, Some(b"v"), 5).build();
/// let section = &batch[records::BATCH_HEADER_LEN..];
/// let record = records::records_in_section(section, 1).next().unwrap().unwrap();
/// assert_eq!(record.value, Some(&b"v"[..]));
/// ```
pub fn records_in_section(section: &[u8], record_count: i32) -> RecordIter<'_> {
    RecordIter {
        bytes: section,
        position: 0,
        index: 0,
        record_count,
        failed: false,
    }
}

/// See [`records`].
#[derive(Debug, Clone)]
pub struct RecordIter<'a> {
    bytes: &'a [u8],
    position: usize,
    index: i32,
    record_count: i32,
    failed: bool,
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = Result<Record<'a>, RecordError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let index = self.index;
        let result = if index >= self.record_count.max(0) {
            if self.position == self.bytes.len() {
                return None;
            }
            Err(RecordError::InvalidRecord {
                index,
                reason: "bytes left after the last record",
            })
        } else if self.position == self.bytes.len() {
            Err(RecordError::InvalidRecord {
                index,
                reason: "batch holds fewer records than its record count",
            })
        } else {
            self.read_record()
                .map_err(|reason| RecordError::InvalidRecord { index, reason })
        };
        match result {
            Ok(record) => {
                self.index += 1;
                Some(Ok(record))
            }
            Err(error) => {
                self.failed = true;
                Some(Err(error))
            }
        }
    }
}

impl<'a> RecordIter<'a> {
    #[inline]
    fn read_record(&mut self) -> Result<Record<'a>, &'static str> {
        let mut outer = Cursor {
            bytes: self.bytes,
            position: self.position,
        };
        let length = outer.varint()?;
        if length < 0 {
            return Err("negative record length");
        }
        let body = outer
            .take(length as usize)
            .map_err(|_| "record length runs past the batch")?;
        self.position = outer.position;

        let mut cursor = Cursor {
            bytes: body,
            position: 0,
        };
        let attributes = cursor.u8()? as i8;
        let timestamp_delta = cursor.varlong()?;
        let offset_delta = cursor.varint()?;
        let key = cursor.nullable_bytes()?;
        let value = cursor.nullable_bytes()?;
        let header_count = cursor.varint()?;
        if header_count < 0 {
            return Err("negative header count");
        }
        let headers_start = cursor.position;
        for _ in 0..header_count {
            read_header(&mut cursor)?;
        }
        if cursor.position != body.len() {
            return Err("record length does not match its fields");
        }
        Ok(Record {
            attributes,
            timestamp_delta,
            offset_delta,
            key,
            value,
            header_count,
            headers: &body[headers_start..],
        })
    }
}

/// The least record timestamp of a stored batch, when it is known without decompressing: a
/// LogAppendTime batch's append time, or the least of an uncompressed CreateTime batch's record
/// timestamps (only each record's length and timestamp delta are read). `None` for a compressed
/// CreateTime batch and for bytes that are not a well-formed batch.
///
/// ```
/// let batch = records::BatchBuilder::new(0).record(None, None, 50).record(None, None, 20).build();
/// assert_eq!(records::min_timestamp(&batch), Some(20));
/// ```
pub fn min_timestamp(batch: &[u8]) -> Option<i64> {
    let header = BatchHeader::parse(batch).ok()?;
    if header.timestamp_type() == crate::TimestampType::LogAppendTime {
        return Some(header.max_timestamp);
    }
    if header.compression().ok()? != Compression::None {
        return None;
    }
    let section = batch.get(BATCH_HEADER_LEN..header.total_len())?;
    let mut cursor = Cursor {
        bytes: section,
        position: 0,
    };
    let mut least = None::<i64>;
    for _ in 0..header.record_count.max(0) {
        let length = usize::try_from(cursor.varint().ok()?).ok()?;
        let end = cursor.position.checked_add(length)?;
        cursor.u8().ok()?;
        let delta = cursor.varlong().ok()?;
        if cursor.position > end || end > section.len() {
            return None;
        }
        cursor.position = end;
        let timestamp = header.base_timestamp.wrapping_add(delta);
        least = Some(least.map_or(timestamp, |least| least.min(timestamp)));
    }
    (cursor.position == section.len())
        .then_some(least)
        .flatten()
}

fn read_header<'a>(cursor: &mut Cursor<'a>) -> Result<Header<'a>, &'static str> {
    let key = cursor.nullable_bytes()?.ok_or("null header key")?;
    let value = cursor.nullable_bytes()?;
    Ok(Header { key, value })
}

struct Cursor<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Cursor<'a> {
    #[inline]
    fn u8(&mut self) -> Result<u8, &'static str> {
        let byte = *self
            .bytes
            .get(self.position)
            .ok_or("record runs past its length")?;
        self.position += 1;
        Ok(byte)
    }

    #[inline]
    fn take(&mut self, len: usize) -> Result<&'a [u8], &'static str> {
        let end = self
            .position
            .checked_add(len)
            .ok_or("field length overflows")?;
        let slice = self
            .bytes
            .get(self.position..end)
            .ok_or("field runs past the record")?;
        self.position = end;
        Ok(slice)
    }

    /// Zigzag varint of at most 5 bytes, as Kafka's `ByteUtils.readVarint`.
    #[inline]
    fn varint(&mut self) -> Result<i32, &'static str> {
        // Most varints of a record (lengths, deltas) take one or two bytes.
        let zigzag = |raw: u32| ((raw >> 1) as i32) ^ -((raw & 1) as i32);
        let first = *self
            .bytes
            .get(self.position)
            .ok_or("record runs past its length")?;
        if first < 0x80 {
            self.position += 1;
            return Ok(zigzag(first as u32));
        }
        match self.bytes.get(self.position + 1) {
            Some(&second) if second < 0x80 => {
                self.position += 2;
                Ok(zigzag((first & 0x7f) as u32 | (second as u32) << 7))
            }
            _ => self.varint_slow(),
        }
    }

    /// [`Cursor::varint`] byte by byte.
    fn varint_slow(&mut self) -> Result<i32, &'static str> {
        let mut raw: u32 = 0;
        for shift in (0..35).step_by(7) {
            let byte = self.u8()?;
            raw |= ((byte & 0x7f) as u32).wrapping_shl(shift);
            if byte & 0x80 == 0 {
                return Ok(((raw >> 1) as i32) ^ -((raw & 1) as i32));
            }
        }
        Err("varint longer than 5 bytes")
    }

    /// Zigzag varlong of at most 10 bytes, as Kafka's `ByteUtils.readVarlong`.
    #[inline]
    fn varlong(&mut self) -> Result<i64, &'static str> {
        let mut raw: u64 = 0;
        for shift in (0..70).step_by(7) {
            let byte = self.u8()?;
            raw |= ((byte & 0x7f) as u64).wrapping_shl(shift);
            if byte & 0x80 == 0 {
                return Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64));
            }
        }
        Err("varlong longer than 10 bytes")
    }

    /// A varint length (-1 = null) and that many bytes.
    #[inline]
    fn nullable_bytes(&mut self) -> Result<Option<&'a [u8]>, &'static str> {
        match self.varint()? {
            -1 => Ok(None),
            len if len < 0 => Err("negative field length"),
            len => self.take(len as usize).map(Some),
        }
    }
}

/// Appends a zigzag varint (used by the builder).
#[inline]
pub(crate) fn put_varint(out: &mut Vec<u8>, value: i32) {
    put_varlong(out, value as i64)
}

/// Appends a zigzag varlong (used by the builder). For values in `i32` range this is the same
/// encoding as a varint.
#[inline]
pub(crate) fn put_varlong(out: &mut Vec<u8>, value: i64) {
    let mut raw = ((value << 1) ^ (value >> 63)) as u64;
    if raw < 0x80 {
        out.push(raw as u8);
        return;
    }
    // One capacity check for the whole varint rather than one per byte.
    let mut encoded = [0u8; 10];
    let mut len = 0;
    while raw >= 0x80 {
        encoded[len] = (raw as u8) | 0x80;
        raw >>= 7;
        len += 1;
    }
    encoded[len] = raw as u8;
    out.extend_from_slice(&encoded[..=len]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_read_alike_on_the_fast_and_slow_paths() {
        let mut values: Vec<i32> = (-20_000..20_000).collect();
        values.extend([i32::MIN, i32::MAX, -1 << 20, 1 << 20, -1 << 27, 1 << 27]);
        for value in values {
            let mut encoded = Vec::new();
            put_varint(&mut encoded, value);
            // Alone (the varint ends the bytes) and followed by more bytes.
            for bytes in [encoded.clone(), [&encoded[..], &[0x80, 0x7f]].concat()] {
                let mut fast = Cursor {
                    bytes: &bytes,
                    position: 0,
                };
                let mut slow = Cursor {
                    bytes: &bytes,
                    position: 0,
                };
                assert_eq!(fast.varint(), Ok(value));
                assert_eq!(slow.varint_slow(), Ok(value));
                assert_eq!(fast.position, encoded.len());
                assert_eq!(slow.position, encoded.len());
            }
            // Cut short, both fail.
            let cut = &encoded[..encoded.len() - 1];
            let mut fast = Cursor {
                bytes: cut,
                position: 0,
            };
            assert!(fast.varint().is_err(), "{value}");
        }
    }
}
