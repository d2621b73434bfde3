//! Builds v2 batches. For tests and tools: a real producer's batches come from the client.

use crate::encoder::{BatchEncoder, RecordFields, put_header, seal};
use crate::{BatchHeader, CONTROL_BIT, Compression, Header, MAGIC_V2, TRANSACTIONAL_BIT};

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
        let mut attributes: i16 = 0;
        if self.transactional {
            attributes |= TRANSACTIONAL_BIT;
        }
        if self.control {
            attributes |= CONTROL_BIT;
        }
        let mut header = BatchHeader {
            base_offset: self.base_offset,
            batch_length: 0,
            partition_leader_epoch: self.partition_leader_epoch,
            magic: MAGIC_V2,
            crc: 0,
            attributes,
            last_offset_delta: self.records.len() as i32 - 1,
            base_timestamp: self.records.first().map_or(-1, |r| r.timestamp_ms),
            max_timestamp: self
                .records
                .iter()
                .map(|r| r.timestamp_ms)
                .max()
                .unwrap_or(-1),
            producer_id: self.producer.producer_id,
            producer_epoch: self.producer.producer_epoch,
            base_sequence: self.producer.base_sequence,
            record_count: self.records.len() as i32,
        };
        let mut out = Vec::new();
        if let Some((compression, count, timestamp_ms, payload)) = &self.opaque {
            header.attributes |= compression.codec();
            header.last_offset_delta = count - 1;
            header.record_count = *count;
            header.base_timestamp = *timestamp_ms;
            header.max_timestamp = *timestamp_ms;
            put_header(&mut out, &header);
            out.extend_from_slice(payload);
            seal(&mut out).expect("a test batch is smaller than 2 GiB");
            return out;
        }
        let mut encoder = BatchEncoder::begin(&mut out, &header);
        for (index, record) in self.records.iter().enumerate() {
            let fields = RecordFields {
                attributes: 0,
                timestamp_delta: record.timestamp_ms - header.base_timestamp,
                offset_delta: index as i32,
                key: record.key.as_deref(),
                value: record.value.as_deref(),
            };
            let headers = record.headers.iter().map(|(key, value)| Header {
                key,
                value: value.as_deref(),
            });
            encoder
                .record(&mut out, &fields, headers)
                .expect("a test record is smaller than 2 GiB");
        }
        encoder
            .finish(&mut out)
            .expect("a test batch is smaller than 2 GiB");
        out
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
