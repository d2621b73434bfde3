//! Decompression of a batch's records section with a bound on the output, for the few places
//! that must look inside a stored compressed batch (ListOffsets by timestamp, the cold tier's
//! Parquet conversion; never the produce path). General-purpose decoders size their output from
//! the input's claims; these stop at `limit` bytes and answer an error instead, so a small
//! "compression bomb" cannot allocate gigabytes.
//!
//! ```
//! use records::Compression;
//! use records::codecs::{DecompressError, decompress};
//!
//! assert_eq!(&decompress(Compression::None, b"abc", 3).unwrap()[..], b"abc");
//! assert!(matches!(
//!     decompress(Compression::None, b"abcd", 3),
//!     Err(DecompressError::TooLarge { limit: 3 })
//! ));
//! ```

use std::io::Read;

use bytes::Bytes;

use crate::Compression;

/// The framing Java's snappy-java writes (and Kafka clients read): a magic header, then blocks,
/// each a big-endian u32 length and one raw snappy block.
const XERIAL_SNAPPY_MAGIC: &[u8] = b"\x82SNAPPY\x00";
const XERIAL_SNAPPY_HEADER_LEN: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecompressError {
    #[error("a compressed batch decompresses to more than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("a compressed batch is corrupt: {0}")]
    Corrupt(String),
}

fn corrupt(error: impl std::fmt::Display) -> DecompressError {
    DecompressError::Corrupt(error.to_string())
}

fn read_bounded(
    mut reader: impl Read,
    limit: usize,
    output: &mut Vec<u8>,
) -> Result<(), DecompressError> {
    reader
        .by_ref()
        .take(limit as u64 + 1)
        .read_to_end(output)
        .map_err(corrupt)?;
    if output.len() > limit {
        return Err(DecompressError::TooLarge { limit });
    }
    Ok(())
}

fn snappy_block(block: &[u8], output: &mut Vec<u8>, limit: usize) -> Result<(), DecompressError> {
    let length = snap::raw::decompress_len(block).map_err(corrupt)?;
    if output.len().saturating_add(length) > limit {
        return Err(DecompressError::TooLarge { limit });
    }
    let start = output.len();
    output.resize(start + length, 0);
    snap::raw::Decoder::new()
        .decompress(block, &mut output[start..])
        .map_err(corrupt)?;
    Ok(())
}

fn snappy(input: &[u8], limit: usize, output: &mut Vec<u8>) -> Result<(), DecompressError> {
    if !input.starts_with(XERIAL_SNAPPY_MAGIC) {
        return snappy_block(input, output, limit);
    }
    let mut rest = input
        .get(XERIAL_SNAPPY_HEADER_LEN..)
        .ok_or_else(|| corrupt("truncated snappy header"))?;
    while !rest.is_empty() {
        let (length, tail) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| corrupt("truncated snappy block length"))?;
        let length = u32::from_be_bytes(*length) as usize;
        let block = tail
            .get(..length)
            .ok_or_else(|| corrupt("truncated snappy block"))?;
        snappy_block(block, output, limit)?;
        rest = &tail[length..];
    }
    Ok(())
}

/// Decompresses a batch's records section, refusing output larger than `limit`.
pub fn decompress(
    compression: Compression,
    input: &[u8],
    limit: usize,
) -> Result<Bytes, DecompressError> {
    let mut output = Vec::new();
    decompress_into(compression, input, limit, &mut output)?;
    Ok(Bytes::from(output))
}

/// [`decompress`] into `output`, which is cleared first; reusing one buffer across batches
/// saves an allocation per batch. On error `output` holds an unspecified prefix.
pub fn decompress_into(
    compression: Compression,
    input: &[u8],
    limit: usize,
    output: &mut Vec<u8>,
) -> Result<(), DecompressError> {
    output.clear();
    match compression {
        Compression::None => {
            if input.len() > limit {
                return Err(DecompressError::TooLarge { limit });
            }
            output.extend_from_slice(input);
            Ok(())
        }
        Compression::Gzip => read_bounded(flate2::read::GzDecoder::new(input), limit, output),
        Compression::Snappy => snappy(input, limit, output),
        Compression::Lz4 => read_bounded(lz4::Decoder::new(input).map_err(corrupt)?, limit, output),
        Compression::Zstd => read_bounded(
            zstd::stream::read::Decoder::new(input).map_err(corrupt)?,
            limit,
            output,
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// 8 MiB of zeros: compresses to almost nothing in every codec.
    fn zeros() -> Vec<u8> {
        vec![0u8; 8 << 20]
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    fn lz4(data: &[u8]) -> Vec<u8> {
        let mut encoder = lz4::EncoderBuilder::new().build(Vec::new()).unwrap();
        encoder.write_all(data).unwrap();
        let (output, result) = encoder.finish();
        result.unwrap();
        output
    }

    fn xerial_snappy(data: &[u8]) -> Vec<u8> {
        let mut output = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01".to_vec();
        for chunk in data.chunks(32 * 1024) {
            let block = snap::raw::Encoder::new().compress_vec(chunk).unwrap();
            output.extend_from_slice(&(block.len() as u32).to_be_bytes());
            output.extend_from_slice(&block);
        }
        output
    }

    fn all_codecs(data: &[u8]) -> Vec<(Compression, Vec<u8>)> {
        vec![
            (Compression::Gzip, gzip(data)),
            (Compression::Lz4, lz4(data)),
            (Compression::Snappy, xerial_snappy(data)),
            (
                Compression::Snappy,
                snap::raw::Encoder::new().compress_vec(data).unwrap(),
            ),
            (Compression::Zstd, zstd::encode_all(data, 1).unwrap()),
        ]
    }

    #[test]
    fn every_codec_round_trips_within_the_limit() {
        let data: Vec<u8> = (0..100_000u32).flat_map(|n| n.to_le_bytes()).collect();
        let mut reused = vec![7u8; 10];
        for (compression, compressed) in all_codecs(&data) {
            let output = decompress(compression, &compressed, data.len()).unwrap();
            assert_eq!(&output[..], &data[..], "{compression:?}");
            decompress_into(compression, &compressed, data.len(), &mut reused).unwrap();
            assert_eq!(reused, data, "{compression:?} into a used buffer");
        }
        assert_eq!(
            &decompress(Compression::None, &data, data.len()).unwrap()[..],
            &data[..]
        );
    }

    #[test]
    fn a_bomb_is_refused_not_allocated() {
        let data = zeros();
        for (compression, compressed) in all_codecs(&data) {
            assert!(
                compressed.len() < data.len() / 10,
                "{compression:?} is a bomb"
            );
            match decompress(compression, &compressed, 1 << 20) {
                Err(DecompressError::TooLarge { limit }) => assert_eq!(limit, 1 << 20),
                other => panic!("{compression:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn garbage_is_an_error() {
        for compression in [
            Compression::Gzip,
            Compression::Lz4,
            Compression::Snappy,
            Compression::Zstd,
        ] {
            assert!(
                decompress(compression, b"\x82SNAPPY\x00 not really", 1 << 20).is_err(),
                "{compression:?}"
            );
        }
    }
}
