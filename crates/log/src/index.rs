//! The two sparse indexes of a segment, held in memory and written whole when the segment is
//! sealed. Byte layouts are in `docs/log-format.md`.

/// Bytes of one `.index` entry: relative offset u32, file position u32 (big-endian).
pub(crate) const OFFSET_ENTRY_LEN: usize = 8;
/// Bytes of one `.timeindex` entry: timestamp i64, relative offset u32 (big-endian).
pub(crate) const TIME_ENTRY_LEN: usize = 12;

/// `(relative base offset of a batch, file position of that batch)`, both strictly increasing.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct OffsetIndex {
    pub(crate) entries: Vec<(u32, u32)>,
}

impl OffsetIndex {
    /// The position of the last indexed batch whose base offset is at most `relative_offset`,
    /// or 0: the batch holding that offset starts there or later.
    pub(crate) fn lookup(&self, relative_offset: u32) -> u32 {
        let after = self
            .entries
            .partition_point(|&(offset, _)| offset <= relative_offset);
        if after == 0 {
            0
        } else {
            self.entries[after - 1].1
        }
    }

    pub(crate) fn push(&mut self, relative_offset: u32, position: u32) {
        self.entries.push((relative_offset, position));
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * OFFSET_ENTRY_LEN);
        for &(offset, position) in &self.entries {
            out.extend_from_slice(&offset.to_be_bytes());
            out.extend_from_slice(&position.to_be_bytes());
        }
        out
    }

    /// Decodes an index file; `None` if its length or ordering is wrong, or a position lies
    /// beyond `segment_size`.
    pub(crate) fn decode(bytes: &[u8], segment_size: u64) -> Option<OffsetIndex> {
        if !bytes.len().is_multiple_of(OFFSET_ENTRY_LEN) {
            return None;
        }
        let mut entries = Vec::with_capacity(bytes.len() / OFFSET_ENTRY_LEN);
        for chunk in bytes.chunks_exact(OFFSET_ENTRY_LEN) {
            let offset = u32::from_be_bytes(chunk[0..4].try_into().ok()?);
            let position = u32::from_be_bytes(chunk[4..8].try_into().ok()?);
            if let Some(&(previous_offset, previous_position)) = entries.last()
                && (offset <= previous_offset || position <= previous_position)
            {
                return None;
            }
            if position as u64 >= segment_size {
                return None;
            }
            entries.push((offset, position));
        }
        Some(OffsetIndex { entries })
    }
}

/// `(T, M)`: T is the max timestamp of the segment up to some batch, M the relative base offset
/// of the first batch that reached T. Timestamps strictly increase, offsets never decrease.
/// Every batch before M is older than T, so a search for the first record at or after a target
/// above T may start at M.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct TimeIndex {
    pub(crate) entries: Vec<(i64, u32)>,
}

impl TimeIndex {
    /// The relative offset to start a search for the first record with timestamp >= `target`:
    /// the last entry whose timestamp is below `target`, or `None` for the segment start.
    pub(crate) fn lookup(&self, target: i64) -> Option<u32> {
        let after = self
            .entries
            .partition_point(|&(timestamp, _)| timestamp < target);
        if after == 0 {
            None
        } else {
            Some(self.entries[after - 1].1)
        }
    }

    pub(crate) fn last(&self) -> Option<(i64, u32)> {
        self.entries.last().copied()
    }

    /// Appends if `timestamp` is above the last entry's (keeps the index monotonic).
    pub(crate) fn maybe_push(&mut self, timestamp: i64, relative_offset: u32) {
        if self
            .entries
            .last()
            .is_none_or(|&(last, _)| timestamp > last)
        {
            self.entries.push((timestamp, relative_offset));
        }
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * TIME_ENTRY_LEN);
        for &(timestamp, offset) in &self.entries {
            out.extend_from_slice(&timestamp.to_be_bytes());
            out.extend_from_slice(&offset.to_be_bytes());
        }
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<TimeIndex> {
        if !bytes.len().is_multiple_of(TIME_ENTRY_LEN) {
            return None;
        }
        let mut entries = Vec::with_capacity(bytes.len() / TIME_ENTRY_LEN);
        for chunk in bytes.chunks_exact(TIME_ENTRY_LEN) {
            let timestamp = i64::from_be_bytes(chunk[0..8].try_into().ok()?);
            let offset = u32::from_be_bytes(chunk[8..12].try_into().ok()?);
            if let Some(&(previous_timestamp, previous_offset)) = entries.last()
                && (timestamp <= previous_timestamp || offset < previous_offset)
            {
                return None;
            }
            entries.push((timestamp, offset));
        }
        Some(TimeIndex { entries })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_lookup() {
        let index = OffsetIndex {
            entries: vec![(10, 100), (20, 200), (30, 300)],
        };
        let cases = [
            (0, 0),
            (9, 0),
            (10, 100),
            (15, 100),
            (20, 200),
            (29, 200),
            (30, 300),
            (99, 300),
        ];
        for (offset, position) in cases {
            assert_eq!(index.lookup(offset), position, "lookup({offset})");
        }
        assert_eq!(OffsetIndex::default().lookup(5), 0);
    }

    #[test]
    fn time_lookup() {
        let index = TimeIndex {
            entries: vec![(100, 0), (200, 5), (300, 9)],
        };
        let cases = [
            (50, None),
            (100, None),
            (101, Some(0)),
            (200, Some(0)),
            (201, Some(5)),
            (1000, Some(9)),
        ];
        for (target, start) in cases {
            assert_eq!(index.lookup(target), start, "lookup({target})");
        }
    }

    #[test]
    fn round_trips_and_rejects_garbage() {
        let offsets = OffsetIndex {
            entries: vec![(1, 10), (5, 4000)],
        };
        assert_eq!(
            OffsetIndex::decode(&offsets.encode(), 5000),
            Some(offsets.clone())
        );
        assert_eq!(OffsetIndex::decode(&offsets.encode(), 4000), None);
        assert_eq!(OffsetIndex::decode(&offsets.encode()[..7], 5000), None);
        let mut zeros = offsets.encode();
        zeros.extend_from_slice(&[0; 8]);
        assert_eq!(OffsetIndex::decode(&zeros, 5000), None);

        let times = TimeIndex {
            entries: vec![(-5, 0), (7, 0), (9, 3)],
        };
        assert_eq!(TimeIndex::decode(&times.encode()), Some(times.clone()));
        let mut zeros = times.encode();
        zeros.extend_from_slice(&[0; 12]);
        assert_eq!(TimeIndex::decode(&zeros), None);
        assert_eq!(TimeIndex::decode(&[0; 5]), None);
    }
}
