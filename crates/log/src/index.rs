//! The sparse indexes of a segment (offsets, times, timestamp zones), held in memory and written
//! whole when the segment is sealed. Byte layouts are in `docs/log-format.md`.

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

/// Bytes of one `.zoneindex` entry: relative offset u32, min and max timestamp i64 (big-endian).
pub(crate) const ZONE_ENTRY_LEN: usize = 20;
/// A zone takes batches until it holds this many bytes (fewer in tests, to get many zones).
pub(crate) const ZONE_BYTES: u64 = if cfg!(test) { 300 } else { 64 << 10 };

/// `(R, min, max)`: the batches from relative base offset R up to the next entry's R (or the
/// segment end) hold records whose timestamps lie in `[min, max]`. `min` is `i64::MIN` when a
/// batch's least timestamp is unknown (a compressed CreateTime batch). Offsets strictly
/// increase. A time-range scan reads only the zones that can match, whatever the order of the
/// timestamps.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct ZoneIndex {
    pub(crate) entries: Vec<(u32, i64, i64)>,
    /// Bytes in the last zone.
    open_bytes: u64,
}

impl ZoneIndex {
    /// Notes a batch of `bytes` bytes at `relative_offset`.
    pub(crate) fn note(&mut self, relative_offset: u32, min: Option<i64>, max: i64, bytes: u64) {
        let min = min.unwrap_or(i64::MIN).min(max);
        match self.entries.last_mut() {
            Some(last) if self.open_bytes < ZONE_BYTES => {
                last.1 = last.1.min(min);
                last.2 = last.2.max(max);
                self.open_bytes += bytes;
            }
            _ => {
                self.entries.push((relative_offset, min, max));
                self.open_bytes = bytes;
            }
        }
    }

    /// From the zone holding `relative_offset` on, the first run of zones whose timestamps can
    /// meet `[low, high)`: where to start reading (never before `relative_offset`) and the
    /// relative offset where the run ends (`None`: at the segment end). `None` if no zone can.
    pub(crate) fn next_match(
        &self,
        relative_offset: u32,
        low: i64,
        high: i64,
    ) -> Option<(u32, Option<u32>)> {
        let first = self
            .entries
            .partition_point(|&(start, _, _)| start <= relative_offset)
            .saturating_sub(1);
        // A `high` of i64::MAX is no upper bound (a record may be timestamped i64::MAX).
        let meets =
            |&(_, min, max): &(u32, i64, i64)| max >= low && (min < high || high == i64::MAX);
        let start = first + self.entries.get(first..)?.iter().position(meets)?;
        let end = self.entries[start..]
            .iter()
            .position(|zone| !meets(zone))
            .map(|after| self.entries[start + after].0);
        Some((self.entries[start].0.max(relative_offset), end))
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * ZONE_ENTRY_LEN);
        for &(offset, min, max) in &self.entries {
            out.extend_from_slice(&offset.to_be_bytes());
            out.extend_from_slice(&min.to_be_bytes());
            out.extend_from_slice(&max.to_be_bytes());
        }
        out
    }

    /// Decodes a sealed segment's zone file; `None` if its length or ordering is wrong.
    pub(crate) fn decode(bytes: &[u8]) -> Option<ZoneIndex> {
        if !bytes.len().is_multiple_of(ZONE_ENTRY_LEN) {
            return None;
        }
        let mut entries: Vec<(u32, i64, i64)> = Vec::with_capacity(bytes.len() / ZONE_ENTRY_LEN);
        for chunk in bytes.chunks_exact(ZONE_ENTRY_LEN) {
            let offset = u32::from_be_bytes(chunk[0..4].try_into().ok()?);
            let min = i64::from_be_bytes(chunk[4..12].try_into().ok()?);
            let max = i64::from_be_bytes(chunk[12..20].try_into().ok()?);
            if min > max
                || entries
                    .last()
                    .is_some_and(|&(previous, _, _)| offset <= previous)
            {
                return None;
            }
            entries.push((offset, min, max));
        }
        Some(ZoneIndex {
            entries,
            open_bytes: ZONE_BYTES,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zones_cover_runs_of_batches_and_find_the_runs_that_can_match() {
        let mut zones = ZoneIndex::default();
        // Zone 0: offsets 0.., times 100..=300 (the second batch is older than the first).
        zones.note(0, Some(200), 300, ZONE_BYTES / 2);
        zones.note(10, Some(100), 150, ZONE_BYTES / 2);
        // Zone 1: 20.., 400..=500. Zone 2: 30.., unknown least timestamp, max 350.
        zones.note(20, Some(400), 500, ZONE_BYTES);
        zones.note(30, None, 350, 10);
        zones.note(31, Some(340), 345, 10);
        assert_eq!(
            zones.entries,
            vec![(0, 100, 300), (20, 400, 500), (30, i64::MIN, 350)]
        );
        assert_eq!(zones.next_match(0, 120, 130), Some((0, Some(20))));
        assert_eq!(zones.next_match(5, 120, 130), Some((5, Some(20))));
        // Both ends of a zone count: [min, max] meets [low, high) when max >= low, min < high.
        assert_eq!(zones.next_match(0, 300, 301), Some((0, Some(20))));
        assert_eq!(zones.next_match(0, 500, 501), Some((20, Some(30))));
        // Below zone 0 only the zone of unknown least timestamps can match.
        assert_eq!(zones.next_match(0, 40, 100), Some((30, None)));
        assert_eq!(zones.next_match(0, 40, 101), Some((0, Some(20))));
        // Zone 2's unknown least timestamp may meet anything up to its max.
        assert_eq!(zones.next_match(0, 320, 330), Some((30, None)));
        assert_eq!(zones.next_match(0, 360, 390), None);
        assert_eq!(zones.next_match(0, 450, 460), Some((20, Some(30))));
        assert_eq!(zones.next_match(25, 0, 1000), Some((25, None)));
        assert_eq!(zones.next_match(31, 450, 460), None);
        // A high end of i64::MAX is no bound: a zone of records timestamped i64::MAX meets it.
        let mut last = ZoneIndex::default();
        last.note(0, Some(i64::MAX), i64::MAX, 10);
        assert_eq!(last.next_match(0, i64::MAX, i64::MAX), Some((0, None)));
        assert_eq!(last.next_match(0, i64::MIN, i64::MAX), Some((0, None)));
        assert_eq!(last.next_match(0, 0, i64::MAX - 1), None);
        assert_eq!(ZoneIndex::default().next_match(0, 0, 10), None);

        let decoded = ZoneIndex::decode(&zones.encode()).unwrap();
        assert_eq!(decoded.entries, zones.entries);
        assert_eq!(ZoneIndex::decode(&zones.encode()[..19]), None);
        let mut backwards = zones.encode();
        backwards.extend_from_slice(
            &ZoneIndex {
                entries: vec![(1, 0, 0)],
                open_bytes: 0,
            }
            .encode(),
        );
        assert_eq!(ZoneIndex::decode(&backwards), None);
    }

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
