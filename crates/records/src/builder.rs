//! Builds v2 batches. For tests and tools: a real producer's batches come from the client.

use crate::record::{put_varint, put_varlong};
use crate::{
    ATTRIBUTES_AT, BATCH_HEADER_LEN, CRC_AT, CRC_START, Compression, LOG_OVERHEAD, MAGIC_V2,
};

/// The idempotent-producer fields of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerIdentity {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
}

impl ProducerIdentity {
    /// A producer without idempotence: every field is -1.
    pub const NONE: ProducerIdentity = ProducerIdentity {
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
    };
}

impl Default for ProducerIdentity {
    fn default() -> Self {
        ProducerIdentity::NONE
    }
}

type OwnedHeader = (Vec<u8>, Option<Vec<u8>>);

#[derive(Debug, Clone)]
struct OwnedRecord {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    timestamp_ms: i64,
    headers: Vec<OwnedHeader>,
}

/// Builds one batch with a correct CRC. Uncompressed unless [`BatchBuilder::opaque_payload`]
/// is used, which stands in for a compressed payload without compressing anything.
///
/// ```
/// let batch = records::BatchBuilder::new(0)
///     .record(None, Some(b"hello"), 1_700_000_000_000)
///     .record_with_headers(Some(b"k"), None, 1_700_000_000_001, &[(b"h", Some(b"v"))])
///     .build();
/// assert_eq!(records::validate_batch(&batch).unwrap().record_count, 2);
/// ```
#[derive(Debug, Clone)]
pub struct BatchBuilder {
    base_offset: i64,
    partition_leader_epoch: i32,
    producer: ProducerIdentity,
    transactional: bool,
    control: bool,
    records: Vec<OwnedRecord>,
    opaque: Option<(Compression, i32, i64, Vec<u8>)>,
}

impl BatchBuilder {
    pub fn new(base_offset: i64) -> BatchBuilder {
        BatchBuilder {
            base_offset,
            partition_leader_epoch: -1,
            producer: ProducerIdentity::NONE,
            transactional: false,
            control: false,
            records: Vec::new(),
            opaque: None,
        }
    }

    pub fn producer(mut self, producer: ProducerIdentity) -> Self {
        self.producer = producer;
        self
    }

    pub fn partition_leader_epoch(mut self, epoch: i32) -> Self {
        self.partition_leader_epoch = epoch;
        self
    }

    pub fn transactional(mut self, transactional: bool) -> Self {
        self.transactional = transactional;
        self
    }

    pub fn control(mut self, control: bool) -> Self {
        self.control = control;
        self
    }

    pub fn record(self, key: Option<&[u8]>, value: Option<&[u8]>, timestamp_ms: i64) -> Self {
        self.record_with_headers(key, value, timestamp_ms, &[])
    }

    pub fn record_with_headers(
        mut self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        timestamp_ms: i64,
        headers: &[(&[u8], Option<&[u8]>)],
    ) -> Self {
        self.records.push(OwnedRecord {
            key: key.map(<[u8]>::to_vec),
            value: value.map(<[u8]>::to_vec),
            timestamp_ms,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec)))
                .collect(),
        });
        self
    }

    /// Replaces the records with `payload` marked as compressed with `compression`, holding
    /// `record_count` records all stamped `timestamp_ms`. The payload is not inspected: this
    /// is for testing code that must treat compressed batches as opaque.
    pub fn opaque_payload(
        mut self,
        compression: Compression,
        record_count: i32,
        timestamp_ms: i64,
        payload: &[u8],
    ) -> Self {
        self.opaque = Some((compression, record_count, timestamp_ms, payload.to_vec()));
        self
    }

    pub fn build(&self) -> Vec<u8> {
        let mut out = vec![0u8; BATCH_HEADER_LEN];
        let mut attributes: i16 = 0;
        let (record_count, base_timestamp, max_timestamp) = match &self.opaque {
            Some((compression, count, timestamp_ms, payload)) => {
                attributes |= compression.codec();
                out.extend_from_slice(payload);
                (*count, *timestamp_ms, *timestamp_ms)
            }
            None => {
                let base_timestamp = self.records.first().map_or(-1, |r| r.timestamp_ms);
                let max_timestamp = self
                    .records
                    .iter()
                    .map(|r| r.timestamp_ms)
                    .max()
                    .unwrap_or(-1);
                let mut body = Vec::new();
                for (index, record) in self.records.iter().enumerate() {
                    body.clear();
                    body.push(0); // attributes
                    put_varlong(&mut body, record.timestamp_ms - base_timestamp);
                    put_varint(&mut body, index as i32);
                    put_nullable(&mut body, record.key.as_deref());
                    put_nullable(&mut body, record.value.as_deref());
                    put_varint(&mut body, record.headers.len() as i32);
                    for (key, value) in &record.headers {
                        put_nullable(&mut body, Some(key));
                        put_nullable(&mut body, value.as_deref());
                    }
                    put_varint(&mut out, body.len() as i32);
                    out.extend_from_slice(&body);
                }
                (self.records.len() as i32, base_timestamp, max_timestamp)
            }
        };
        if self.transactional {
            attributes |= 0x10;
        }
        if self.control {
            attributes |= 0x20;
        }
        let batch_length = (out.len() - LOG_OVERHEAD) as i32;
        let mut header = Vec::with_capacity(BATCH_HEADER_LEN);
        header.extend_from_slice(&self.base_offset.to_be_bytes());
        header.extend_from_slice(&batch_length.to_be_bytes());
        header.extend_from_slice(&self.partition_leader_epoch.to_be_bytes());
        header.push(MAGIC_V2 as u8);
        header.extend_from_slice(&[0; 4]); // crc, below
        header.extend_from_slice(&attributes.to_be_bytes());
        header.extend_from_slice(&(record_count - 1).to_be_bytes());
        header.extend_from_slice(&base_timestamp.to_be_bytes());
        header.extend_from_slice(&max_timestamp.to_be_bytes());
        header.extend_from_slice(&self.producer.producer_id.to_be_bytes());
        header.extend_from_slice(&self.producer.producer_epoch.to_be_bytes());
        header.extend_from_slice(&self.producer.base_sequence.to_be_bytes());
        header.extend_from_slice(&record_count.to_be_bytes());
        debug_assert_eq!(header.len(), BATCH_HEADER_LEN);
        debug_assert_eq!(ATTRIBUTES_AT, CRC_START);
        out[..BATCH_HEADER_LEN].copy_from_slice(&header);
        let crc = crc32c::crc32c(&out[CRC_START..]);
        out[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        out
    }
}

fn put_nullable(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => put_varint(out, -1),
        Some(bytes) => {
            put_varint(out, bytes.len() as i32);
            out.extend_from_slice(bytes);
        }
    }
}

/// A record for [`build_uncompressed_batch`]: `(key, value, timestamp_ms)`.
pub type SimpleRecord<'a> = (Option<&'a [u8]>, Option<&'a [u8]>, i64);

/// One uncompressed batch of `(key, value, timestamp_ms)` records. For tests and tools.
pub fn build_uncompressed_batch(
    base_offset: i64,
    records: &[SimpleRecord<'_>],
    producer: ProducerIdentity,
) -> Vec<u8> {
    let mut builder = BatchBuilder::new(base_offset).producer(producer);
    for (key, value, timestamp_ms) in records {
        builder = builder.record(*key, *value, *timestamp_ms);
    }
    builder.build()
}
