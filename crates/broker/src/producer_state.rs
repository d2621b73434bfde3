//! Idempotent producers: per producer id and partition, the epoch and the last few batches'
//! sequence ranges, so a retried batch is acknowledged without a second append and a gap is
//! refused with OUT_OF_ORDER_SEQUENCE_NUMBER.

use std::collections::{HashMap, VecDeque};

use kafka_protocol::error::ResponseError;
use records::BatchHeader;

use crate::error::KafkaError;
use crate::limits::PRODUCER_BATCHES_REMEMBERED;

/// A batch of an idempotent producer already in the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct BatchSequence {
    first_sequence: i32,
    last_sequence: i32,
    base_offset: i64,
}

#[derive(Debug)]
struct ProducerEntry {
    epoch: i16,
    batches: VecDeque<BatchSequence>,
}

/// What to do with an incoming batch.
#[derive(Debug, PartialEq, Eq)]
pub enum SequenceVerdict {
    /// Not idempotent, or the next batch in sequence: append it.
    Append,
    /// Already in the log at this base offset: acknowledge, don't append.
    Duplicate { base_offset: i64 },
}

/// Per-partition producer state.
#[derive(Debug, Default)]
pub struct ProducerStates {
    producers: HashMap<i64, ProducerEntry>,
}

fn next_sequence(sequence: i32) -> i32 {
    if sequence == i32::MAX {
        0
    } else {
        sequence + 1
    }
}

fn last_sequence(header: &BatchHeader) -> i32 {
    let last = header.base_sequence as i64 + header.last_offset_delta as i64;
    if last > i32::MAX as i64 {
        (last - i32::MAX as i64 - 1) as i32
    } else {
        last as i32
    }
}

impl ProducerStates {
    /// Decides whether `header`'s batch is new, a duplicate or out of order.
    pub fn check(&self, header: &BatchHeader) -> Result<SequenceVerdict, KafkaError> {
        if header.producer_id < 0 || header.base_sequence < 0 {
            return Ok(SequenceVerdict::Append);
        }
        let Some(entry) = self.producers.get(&header.producer_id) else {
            return Ok(SequenceVerdict::Append);
        };
        if header.producer_epoch < entry.epoch {
            return Err(KafkaError::new(
                ResponseError::InvalidProducerEpoch,
                format!(
                    "producer {} has epoch {} but epoch {} is current",
                    header.producer_id, header.producer_epoch, entry.epoch
                ),
            ));
        }
        if header.producer_epoch > entry.epoch {
            return if header.base_sequence == 0 {
                Ok(SequenceVerdict::Append)
            } else {
                Err(out_of_order(header, 0))
            };
        }
        let last = last_sequence(header);
        if let Some(previous) = entry.batches.iter().find(|batch| {
            batch.first_sequence == header.base_sequence && batch.last_sequence == last
        }) {
            return Ok(SequenceVerdict::Duplicate {
                base_offset: previous.base_offset,
            });
        }
        let expected = entry
            .batches
            .back()
            .map_or(0, |batch| next_sequence(batch.last_sequence));
        if header.base_sequence == expected {
            Ok(SequenceVerdict::Append)
        } else {
            Err(out_of_order(header, expected))
        }
    }

    /// Remembers a batch that is now in the log at `base_offset`.
    pub fn record(&mut self, header: &BatchHeader, base_offset: i64) {
        if header.producer_id < 0 || header.base_sequence < 0 {
            return;
        }
        let entry = self
            .producers
            .entry(header.producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch: header.producer_epoch,
                batches: VecDeque::new(),
            });
        if header.producer_epoch != entry.epoch {
            entry.epoch = header.producer_epoch;
            entry.batches.clear();
        }
        if entry.batches.len() == PRODUCER_BATCHES_REMEMBERED {
            entry.batches.pop_front();
        }
        entry.batches.push_back(BatchSequence {
            first_sequence: header.base_sequence,
            last_sequence: last_sequence(header),
            base_offset,
        });
    }
}

fn out_of_order(header: &BatchHeader, expected: i32) -> KafkaError {
    KafkaError::new(
        ResponseError::OutOfOrderSequenceNumber,
        format!(
            "producer {} epoch {} sent sequence {} but {} was expected",
            header.producer_id, header.producer_epoch, header.base_sequence, expected
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use records::{BatchBuilder, BatchHeader, ProducerIdentity};

    /// A batch of `count` records from producer 7 at `epoch`, starting at `sequence`.
    fn batch(epoch: i16, sequence: i32, count: usize) -> BatchHeader {
        let mut builder = BatchBuilder::new(0).producer(ProducerIdentity {
            producer_id: 7,
            producer_epoch: epoch,
            base_sequence: sequence,
        });
        for _ in 0..count {
            builder = builder.record(None, Some(b"v"), 1);
        }
        BatchHeader::parse(&builder.build()).unwrap()
    }

    /// Runs `steps` of (epoch, first sequence, records, expected verdict) against fresh state,
    /// recording every appended batch at the next offset.
    fn check(steps: &[(i16, i32, usize, &str)]) {
        let mut states = ProducerStates::default();
        let mut next_offset = 0;
        for (step, &(epoch, sequence, count, expected)) in steps.iter().enumerate() {
            let header = batch(epoch, sequence, count);
            let verdict = match states.check(&header) {
                Ok(SequenceVerdict::Append) => {
                    states.record(&header, next_offset);
                    next_offset += count as i64;
                    "append".to_string()
                }
                Ok(SequenceVerdict::Duplicate { base_offset }) => {
                    format!("duplicate@{base_offset}")
                }
                Err(error) => format!("{:?}", error.code),
            };
            assert_eq!(verdict, expected, "step {step}: {steps:?}");
        }
    }

    #[test]
    fn sequences() {
        check(&[
            (0, 0, 3, "append"),
            (0, 3, 2, "append"),
            (0, 5, 1, "append"),
        ]);
        check(&[(0, 0, 3, "append"), (0, 0, 3, "duplicate@0")]);
        check(&[
            (0, 0, 3, "append"),
            (0, 3, 2, "append"),
            (0, 0, 3, "duplicate@0"),
        ]);
        check(&[(0, 0, 3, "append"), (0, 4, 1, "OutOfOrderSequenceNumber")]);
        check(&[(0, 0, 3, "append"), (0, 2, 1, "OutOfOrderSequenceNumber")]);
        check(&[(1, 0, 1, "append"), (0, 1, 1, "InvalidProducerEpoch")]);
        check(&[
            (0, 0, 1, "append"),
            (1, 0, 1, "append"),
            (1, 1, 1, "append"),
        ]);
        check(&[(0, 0, 1, "append"), (1, 5, 1, "OutOfOrderSequenceNumber")]);
        // An unknown producer (e.g. its state aged out) starts wherever it is.
        check(&[(0, 42, 1, "append"), (0, 43, 1, "append")]);
        // Sequences wrap from i32::MAX to 0.
        check(&[(0, i32::MAX, 1, "append"), (0, 0, 1, "append")]);
    }

    #[test]
    fn only_the_last_five_batches_are_remembered_as_duplicates() {
        let mut steps: Vec<(i16, i32, usize, &str)> = (0..6).map(|i| (0, i, 1, "append")).collect();
        steps.push((0, 1, 1, "duplicate@1"));
        steps.push((0, 0, 1, "OutOfOrderSequenceNumber"));
        check(&steps);
    }
}
