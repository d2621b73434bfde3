//! The object store behind the cold tier: a local folder or any S3-compatible store, reached
//! through `object_store`, with a timeout on every call, bounded concurrency, and retries with
//! exponential backoff.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{
    ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig,
};
use tokio::sync::Semaphore;

/// Where the cold tier lives, parsed from `--cold-store`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// A folder on this machine.
    Local(std::path::PathBuf),
    /// `s3://bucket/prefix`.
    S3 { bucket: String, prefix: String },
}

impl StoreLocation {
    /// Parses a plain path, `file:///abs/path` or `s3://bucket[/prefix]`.
    pub fn parse(spec: &str) -> Result<StoreLocation, StoreError> {
        if let Some(rest) = spec.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(StoreError::Config(format!(
                    "`{spec}` names no bucket: write s3://BUCKET[/PREFIX]"
                )));
            }
            return Ok(StoreLocation::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.trim_matches('/').to_string(),
            });
        }
        let path = spec.strip_prefix("file://").unwrap_or(spec);
        if path.is_empty() || spec.contains("://") && !spec.starts_with("file://") {
            return Err(StoreError::Config(format!(
                "`{spec}` is not a store: write a folder path, file:///PATH or s3://BUCKET[/PREFIX]"
            )));
        }
        Ok(StoreLocation::Local(path.into()))
    }
}

/// Limits on every call to the store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// One attempt of one call.
    pub timeout: Duration,
    /// Calls in flight at once.
    pub concurrency: usize,
    /// Attempts after the first for a failed call (not for NotFound or AlreadyExists).
    pub retries: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            timeout: Duration::from_secs(30),
            concurrency: 8,
            retries: 3,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cold store configuration: {0}")]
    Config(String),
    #[error("object {key} does not exist in the cold store")]
    NotFound { key: String },
    #[error("object {key} already exists in the cold store with other content")]
    Conflict { key: String },
    #[error("cold store call `{operation} {key}` timed out after {timeout:?}")]
    Timeout {
        operation: &'static str,
        key: String,
        timeout: Duration,
    },
    #[error("cold object {key} is not readable Parquet: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("cold store call `{operation} {key}` failed: {source}")]
    Store {
        operation: &'static str,
        key: String,
        #[source]
        source: object_store::Error,
    },
}

impl StoreError {
    fn is_final(&self) -> bool {
        matches!(
            self,
            StoreError::NotFound { .. }
                | StoreError::Conflict { .. }
                | StoreError::Config(_)
                | StoreError::Corrupt { .. }
        )
    }
}

/// Memory for parsed Parquet footers of cold objects.
const FOOTER_CACHE_BYTES: usize = 64 << 20;

/// An object listed under a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub key: String,
    pub size: u64,
}

/// The cold store: keys are `/`-separated relative names (`topic/0/…`).
#[derive(Clone)]
pub struct TierStore {
    inner: Arc<dyn ObjectStore>,
    description: String,
    options: StoreOptions,
    permits: Arc<Semaphore>,
    /// Parsed Parquet footers (see `ranged`).
    footers: Arc<crate::ranged::Footers>,
    /// The same store when it is a folder of this machine: ranged reads are then positioned
    /// reads in the calling task. From the page cache they take microseconds, less than
    /// object_store's hand-over to a blocking thread and back.
    local: Option<Arc<LocalFileSystem>>,
}

impl std::fmt::Debug for TierStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.description)
    }
}

/// `ranges` of the local object at `path`, read into one buffer.
fn read_local_ranges(
    local: &LocalFileSystem,
    path: &ObjectPath,
    key: &str,
    ranges: &[std::ops::Range<u64>],
) -> Result<Vec<Bytes>, StoreError> {
    use std::io::{Read, Seek};
    let past_end = || crate::ranged::corrupt(key, "a read range runs past the object's end");
    let failed = |source: std::io::Error| match source.kind() {
        std::io::ErrorKind::NotFound => StoreError::NotFound {
            key: key.to_string(),
        },
        _ => StoreError::Store {
            operation: "get",
            key: key.to_string(),
            source: object_store::Error::Generic {
                store: "LocalFileSystem",
                source: Box::new(source),
            },
        },
    };
    let file = local
        .path_to_filesystem(path)
        .map_err(|source| TierStore::wrap("get", key, source))
        .and_then(|file| std::fs::File::open(file).map_err(failed))?;
    let lengths: Vec<usize> = ranges
        .iter()
        .map(|range| usize::try_from(range.end.saturating_sub(range.start)))
        .collect::<Result<_, _>>()
        .map_err(|_| past_end())?;
    // Read into the buffer's spare capacity: `read_to_end` does not zero it first.
    let mut buffer = Vec::with_capacity(lengths.iter().sum());
    for (range, &length) in ranges.iter().zip(&lengths) {
        (&file)
            .seek(std::io::SeekFrom::Start(range.start))
            .map_err(failed)?;
        let read = (&file)
            .take(length as u64)
            .read_to_end(&mut buffer)
            .map_err(failed)?;
        if read != length {
            return Err(past_end());
        }
    }
    let buffer = Bytes::from(buffer);
    let mut at = 0;
    Ok(lengths
        .iter()
        .map(|&length| {
            at += length;
            buffer.slice(at - length..at)
        })
        .collect())
}

impl TierStore {
    /// Opens the store. S3 settings come from the environment: `AWS_ENDPOINT_URL` (a local
    /// S3 server: path-style requests, plain http allowed), `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION` (default us-east-1).
    pub fn open(location: &StoreLocation, options: StoreOptions) -> Result<TierStore, StoreError> {
        let mut local = None;
        let (inner, description): (Arc<dyn ObjectStore>, String) = match location {
            StoreLocation::Local(path) => {
                std::fs::create_dir_all(path).map_err(|error| {
                    StoreError::Config(format!("cannot create {}: {error}", path.display()))
                })?;
                let store = Arc::new(
                    LocalFileSystem::new_with_prefix(path)
                        .map_err(|error| StoreError::Config(error.to_string()))?
                        .with_automatic_cleanup(true),
                );
                local = Some(Arc::clone(&store));
                (store, format!("folder {}", path.display()))
            }
            StoreLocation::S3 { bucket, prefix } => {
                let mut builder = AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    // Our own loop retries (for every backend alike) and bounds each attempt.
                    .with_retry(RetryConfig {
                        max_retries: 0,
                        ..RetryConfig::default()
                    })
                    .with_client_options(
                        ClientOptions::new()
                            .with_timeout(options.timeout)
                            .with_connect_timeout(Duration::from_secs(5)),
                    );
                let endpoint = std::env::var("AWS_ENDPOINT_URL")
                    .or_else(|_| std::env::var("AWS_ENDPOINT"))
                    .ok();
                if let Some(endpoint) = &endpoint {
                    builder = builder
                        .with_endpoint(endpoint)
                        .with_allow_http(endpoint.starts_with("http://"))
                        .with_virtual_hosted_style_request(false);
                }
                if std::env::var("AWS_REGION").is_err()
                    && std::env::var("AWS_DEFAULT_REGION").is_err()
                {
                    builder = builder.with_region("us-east-1");
                }
                let store = builder
                    .build()
                    .map_err(|error| StoreError::Config(error.to_string()))?;
                let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
                    Arc::new(store)
                } else {
                    Arc::new(object_store::prefix::PrefixStore::new(
                        store,
                        prefix.as_str(),
                    ))
                };
                let at = endpoint.map(|e| format!(" at {e}")).unwrap_or_default();
                (store, format!("s3://{bucket}/{prefix}{at}"))
            }
        };
        Ok(TierStore {
            inner,
            description,
            permits: Arc::new(Semaphore::new(options.concurrency.max(1))),
            footers: Arc::new(crate::ranged::Footers::new(FOOTER_CACHE_BYTES)),
            options,
            local,
        })
    }

    pub(crate) fn footers(&self) -> &crate::ranged::Footers {
        &self.footers
    }

    /// The underlying store (rooted at the location), for readers that bring their own limits
    /// (the SQL engine's registry of object stores).
    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        Arc::clone(&self.inner)
    }

    /// Runs one store call with a permit, a timeout per attempt and retries with backoff.
    async fn call<T, F, Fut>(
        &self,
        operation: &'static str,
        key: &str,
        mut attempt: F,
    ) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let mut backoff = self.options.initial_backoff;
        let mut tries = 0;
        loop {
            let result = {
                let _permit = self.permits.acquire().await.expect("never closed");
                match tokio::time::timeout(self.options.timeout, attempt()).await {
                    Ok(result) => result,
                    Err(_) => Err(StoreError::Timeout {
                        operation,
                        key: key.to_string(),
                        timeout: self.options.timeout,
                    }),
                }
            };
            match result {
                Err(error) if !error.is_final() && tries < self.options.retries => {
                    tries += 1;
                    tracing::debug!(%error, tries, "retrying a cold store call");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.options.max_backoff);
                }
                other => return other,
            }
        }
    }

    fn wrap(operation: &'static str, key: &str, source: object_store::Error) -> StoreError {
        match source {
            object_store::Error::NotFound { .. } => StoreError::NotFound {
                key: key.to_string(),
            },
            source => StoreError::Store {
                operation,
                key: key.to_string(),
                source,
            },
        }
    }

    /// Writes `key` once: never overwrites. If it exists already with the same bytes (an
    /// earlier attempt of this very write landed), that counts as success.
    pub async fn put_new(&self, key: &str, bytes: Bytes) -> Result<(), StoreError> {
        let path = ObjectPath::from(key);
        let outcome = self
            .call("put", key, || {
                let payload = PutPayload::from_bytes(bytes.clone());
                let options = PutOptions {
                    mode: PutMode::Create,
                    ..PutOptions::default()
                };
                let path = &path;
                async move {
                    match self.inner.put_opts(path, payload, options).await {
                        Ok(_) => Ok(true),
                        Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
                        Err(source) => Err(Self::wrap("put", key, source)),
                    }
                }
            })
            .await?;
        if !outcome && self.get(key).await? != bytes {
            return Err(StoreError::Conflict {
                key: key.to_string(),
            });
        }
        Ok(())
    }

    pub async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        let path = ObjectPath::from(key);
        self.call("get", key, || {
            let path = &path;
            async move {
                let result = self
                    .inner
                    .get(path)
                    .await
                    .map_err(|source| Self::wrap("get", key, source))?;
                result
                    .bytes()
                    .await
                    .map_err(|source| Self::wrap("get", key, source))
            }
        })
        .await
    }

    /// Byte ranges of `key`, in the order asked (the store may fetch close ones together).
    pub async fn get_ranges(
        &self,
        key: &str,
        ranges: &[std::ops::Range<u64>],
    ) -> Result<Vec<Bytes>, StoreError> {
        let path = ObjectPath::from(key);
        if let Some(local) = &self.local {
            return read_local_ranges(local, &path, key, ranges);
        }
        self.call("get", key, || {
            let path = &path;
            async move {
                self.inner
                    .get_ranges(path, ranges)
                    .await
                    .map_err(|source| Self::wrap("get", key, source))
            }
        })
        .await
    }

    /// Deletes `key`; deleting what is already gone succeeds.
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = ObjectPath::from(key);
        self.call("delete", key, || {
            let path = &path;
            async move {
                match self.inner.delete(path).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                    Err(source) => Err(Self::wrap("delete", key, source)),
                }
            }
        })
        .await
    }

    /// Every object under `prefix` (a folder: `topic/0`), recursively.
    pub async fn list(&self, prefix: &str) -> Result<Vec<Listed>, StoreError> {
        let path = ObjectPath::from(prefix);
        self.call("list", prefix, || {
            let path = &path;
            async move {
                self.inner
                    .list(Some(path))
                    .map_ok(|meta| Listed {
                        key: meta.location.to_string(),
                        size: meta.size,
                    })
                    .try_collect::<Vec<_>>()
                    .await
                    .map_err(|source| Self::wrap("list", prefix, source))
            }
        })
        .await
    }
}

impl std::fmt::Display for TierStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.description)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse() {
        assert_eq!(
            StoreLocation::parse("s3://lake/cold/").unwrap(),
            StoreLocation::S3 {
                bucket: "lake".into(),
                prefix: "cold".into()
            }
        );
        assert_eq!(
            StoreLocation::parse("file:///var/cold").unwrap(),
            StoreLocation::Local("/var/cold".into())
        );
        assert_eq!(
            StoreLocation::parse("data/cold").unwrap(),
            StoreLocation::Local("data/cold".into())
        );
        assert!(StoreLocation::parse("s3://").is_err());
        assert!(StoreLocation::parse("gs://bucket").is_err());
    }

    #[tokio::test]
    async fn objects_are_written_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = TierStore::open(
            &StoreLocation::Local(dir.path().to_path_buf()),
            StoreOptions::default(),
        )
        .unwrap();
        store
            .put_new("t/0/a.parquet", Bytes::from_static(b"one"))
            .await
            .unwrap();
        // The same bytes again: an earlier attempt of the same write.
        store
            .put_new("t/0/a.parquet", Bytes::from_static(b"one"))
            .await
            .unwrap();
        assert!(matches!(
            store
                .put_new("t/0/a.parquet", Bytes::from_static(b"two"))
                .await,
            Err(StoreError::Conflict { .. })
        ));
        assert_eq!(&store.get("t/0/a.parquet").await.unwrap()[..], b"one");
        let listed = store.list("t/0").await.unwrap();
        assert_eq!(
            listed,
            vec![Listed {
                key: "t/0/a.parquet".into(),
                size: 3
            }]
        );
        store.delete("t/0/a.parquet").await.unwrap();
        store.delete("t/0/a.parquet").await.unwrap();
        assert!(matches!(
            store.get("t/0/a.parquet").await,
            Err(StoreError::NotFound { .. })
        ));
        assert!(store.list("t/0").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn local_ranged_reads_give_the_exact_bytes_or_say_why_not() {
        let dir = tempfile::tempdir().unwrap();
        let store = TierStore::open(
            &StoreLocation::Local(dir.path().to_path_buf()),
            StoreOptions::default(),
        )
        .unwrap();
        let bytes: Vec<u8> = (0..100_000u32).map(|n| (n * 7 % 251) as u8).collect();
        store
            .put_new("t/0/b.parquet", Bytes::from(bytes.clone()))
            .await
            .unwrap();
        let ranges = [0..10, 10..10, 4_000..70_000, 99_990..100_000];
        let parts = store.get_ranges("t/0/b.parquet", &ranges).await.unwrap();
        for (range, part) in ranges.iter().zip(&parts) {
            assert_eq!(&part[..], &bytes[range.start as usize..range.end as usize]);
        }
        assert!(matches!(
            store
                .get_ranges("t/0/b.parquet", std::slice::from_ref(&(99_990..100_001)))
                .await,
            Err(StoreError::Corrupt { .. })
        ));
        assert!(matches!(
            store
                .get_ranges("t/0/missing.parquet", std::slice::from_ref(&(0..1)))
                .await,
            Err(StoreError::NotFound { .. })
        ));
    }
}
