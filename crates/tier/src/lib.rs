//! The cold tier. Sealed log segments become Parquet objects in an object store (a local folder
//! by default, any S3-compatible store in production); a per-partition manifest is the
//! authority on which objects hold which offsets; cold reads turn Parquet rows back into Kafka
//! RecordBatch v2 bytes, kept in a cache bounded in bytes.
//!
//! **Architecture invariant:** `tier` knows nothing about sockets or the Kafka protocol. It
//! converts, stores, lists and reads; the broker decides when.

pub mod cache;
pub mod convert;
pub mod manifest;
pub mod ranged;
pub mod store;
pub mod upload;

pub use cache::{ColdCache, ReadError};
pub use convert::{ColdBatches, ConvertOptions, ObjectStats, ParquetCodec};
pub use manifest::{Manifest, ObjectEntry, PartitionPrefix};
pub use store::{StoreError, StoreLocation, StoreOptions, TierStore};
