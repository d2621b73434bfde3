//! The tables made by CREATE TABLE ... AS, kept across restarts: `DATA_DIR/sql/tables.json`
//! names each table's location, format and columns, and the engine registers them again at
//! start. The file is replaced atomically (write a temporary file, fsync it, rename it over the
//! old one, fsync the folder), so a crash leaves the old catalog or the new one.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::{DataFusionError, Result, TableReference};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::prelude::SessionContext;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tier::{StoreLocation, TierStore};

/// One column of a table, its type as Arrow writes it (`Int64`, `Utf8`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    pub data_type: String,
    pub nullable: bool,
}

/// One table: Parquet files `part-*.parquet` at `location` (a folder or `s3://bucket/prefix`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableEntry {
    pub name: String,
    pub location: String,
    pub format: String,
    pub columns: Vec<Column>,
}

impl TableEntry {
    pub fn new(name: &str, location: &StoreLocation, schema: &Schema) -> TableEntry {
        TableEntry {
            name: name.to_string(),
            location: location_text(location),
            format: "parquet".into(),
            columns: schema
                .fields()
                .iter()
                .map(|field| Column {
                    name: field.name().clone(),
                    data_type: field.data_type().to_string(),
                    nullable: field.is_nullable(),
                })
                .collect(),
        }
    }

    /// The Arrow schema, or why a column type does not parse.
    pub fn schema(&self) -> Result<SchemaRef> {
        let fields = self
            .columns
            .iter()
            .map(|column| {
                DataType::from_str(&column.data_type)
                    .map(|data_type| Field::new(&column.name, data_type, column.nullable))
                    .map_err(|error| {
                        DataFusionError::Plan(format!(
                            "table {}: column {} has type {}: {error}",
                            self.name, column.name, column.data_type
                        ))
                    })
            })
            .collect::<Result<Vec<Field>>>()?;
        Ok(Arc::new(Schema::new(fields)))
    }
}

/// How a location is written in the catalog (and shown to people).
pub fn location_text(location: &StoreLocation) -> String {
    match location {
        StoreLocation::Local(path) => std::path::absolute(path)
            .unwrap_or_else(|_| path.clone())
            .display()
            .to_string(),
        StoreLocation::S3 { bucket, prefix } if prefix.is_empty() => format!("s3://{bucket}"),
        StoreLocation::S3 { bucket, prefix } => format!("s3://{bucket}/{prefix}"),
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct CatalogFile {
    tables: Vec<TableEntry>,
}

/// The persisted list of CTAS tables.
pub struct TableCatalog {
    path: PathBuf,
    tables: Mutex<Vec<TableEntry>>,
    /// Names a CTAS is making now ([`TableCatalog::claim`]).
    making: Mutex<std::collections::HashSet<String>>,
}

/// A name being made by one CTAS, until this drops.
pub struct Claim<'a> {
    catalog: &'a TableCatalog,
    name: String,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.catalog.making.lock().remove(&self.name);
    }
}

impl TableCatalog {
    /// Reads `DATA_DIR/sql/tables.json` (an empty catalog if there is none).
    pub fn open(data_dir: &Path) -> std::io::Result<TableCatalog> {
        let path = data_dir.join("sql").join("tables.json");
        let tables = match std::fs::read(&path) {
            Ok(bytes) => {
                let file: CatalogFile = serde_json::from_slice(&bytes).map_err(|error| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("{} is not a table catalog: {error}", path.display()),
                    )
                })?;
                file.tables
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(error) => return Err(error),
        };
        Ok(TableCatalog {
            path,
            tables: Mutex::new(tables),
            making: Mutex::default(),
        })
    }

    /// Claims `name` for one CTAS while it runs; `None` if another CTAS is making it now (two
    /// would both find the name free, and the second would replace the first).
    pub fn claim(&self, name: &str) -> Option<Claim<'_>> {
        self.making.lock().insert(name.to_string()).then(|| Claim {
            catalog: self,
            name: name.to_string(),
        })
    }

    pub fn tables(&self) -> Vec<TableEntry> {
        self.tables.lock().clone()
    }

    /// Adds (or replaces) a table and makes the catalog durable before returning.
    pub fn add(&self, entry: TableEntry) -> std::io::Result<()> {
        let mut tables = self.tables.lock();
        let mut next = tables.clone();
        next.retain(|table| table.name != entry.name);
        next.push(entry);
        self.write(&next)?;
        *tables = next;
        Ok(())
    }

    /// Removes a table (DROP TABLE); durable before returning. False if it was not there.
    pub fn remove(&self, name: &str) -> std::io::Result<bool> {
        let mut tables = self.tables.lock();
        if !tables.iter().any(|table| table.name == name) {
            return Ok(false);
        }
        let next: Vec<TableEntry> = tables
            .iter()
            .filter(|table| table.name != name)
            .cloned()
            .collect();
        self.write(&next)?;
        *tables = next;
        Ok(true)
    }

    fn write(&self, tables: &[TableEntry]) -> std::io::Result<()> {
        let folder = self.path.parent().expect("the catalog is in a folder");
        std::fs::create_dir_all(folder)?;
        let temporary = self.path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(&CatalogFile {
            tables: tables.to_vec(),
        })
        .expect("a catalog always serializes");
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, &self.path)?;
        std::fs::File::open(folder)?.sync_all()
    }
}

/// Makes `entry` queryable in `context` under its name: a listing table over its Parquet files
/// with the recorded schema (no file is read here). An S3 location gets the bucket's store,
/// built from the environment like the cold store's.
pub fn register(context: &SessionContext, entry: &TableEntry) -> Result<()> {
    let location = StoreLocation::parse(&entry.location)
        .map_err(|error| DataFusionError::Plan(format!("table {}: {error}", entry.name)))?;
    let url = match &location {
        StoreLocation::Local(path) => format!("{}/", path.display()),
        StoreLocation::S3 { bucket, prefix } => {
            let root = StoreLocation::S3 {
                bucket: bucket.clone(),
                prefix: String::new(),
            };
            let store = TierStore::open(&root, tier::StoreOptions::default())
                .map_err(|error| DataFusionError::Plan(format!("table {}: {error}", entry.name)))?;
            let bucket_url = ObjectStoreUrl::parse(format!("s3://{bucket}"))?;
            context.register_object_store(bucket_url.as_ref(), store.object_store());
            if prefix.is_empty() {
                format!("s3://{bucket}/")
            } else {
                format!("s3://{bucket}/{prefix}/")
            }
        }
    };
    let options =
        ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
    let config = ListingTableConfig::new(ListingTableUrl::parse(&url)?)
        .with_listing_options(options)
        .with_schema(entry.schema()?);
    let table = ListingTable::try_new(config)?;
    // By the name as it is (`ctas::table_name`), not parsed again.
    context.register_table(TableReference::bare(entry.name.as_str()), Arc::new(table))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_claimed_by_one_ctas_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = TableCatalog::open(dir.path()).unwrap();
        let first = catalog.claim("t").unwrap();
        assert!(catalog.claim("t").is_none());
        let other = catalog.claim("u").unwrap();
        drop(first);
        assert!(catalog.claim("t").is_some());
        drop(other);
    }

    #[test]
    fn the_catalog_survives_a_reopen_and_types_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = TableCatalog::open(dir.path()).unwrap();
        assert!(catalog.tables().is_empty());
        let headers = DataType::List(Arc::new(Field::new(
            "item",
            DataType::Struct(
                vec![
                    Field::new("key", DataType::Utf8, true),
                    Field::new("value", DataType::Binary, true),
                ]
                .into(),
            ),
            true,
        )));
        let schema = Schema::new(vec![
            Field::new("_partition", DataType::Int32, false),
            Field::new("_offset", DataType::Int64, false),
            Field::new(
                "_timestamp",
                DataType::Timestamp(arrow::datatypes::TimeUnit::Millisecond, Some("UTC".into())),
                false,
            ),
            Field::new("device_name", DataType::Utf8View, true),
            Field::new("metric", DataType::Float64, true),
            Field::new("ok", DataType::Boolean, true),
            Field::new("_headers", headers, true),
        ]);
        let local = TableEntry::new("w", &StoreLocation::Local(dir.path().join("w")), &schema);
        assert_eq!(*local.schema().unwrap(), schema);
        let s3 = StoreLocation::parse("s3://bucket/some/prefix").unwrap();
        catalog.add(local.clone()).unwrap();
        catalog
            .add(TableEntry::new("x", &s3, &Schema::empty()))
            .unwrap();
        let reopened = TableCatalog::open(dir.path()).unwrap();
        assert_eq!(reopened.tables(), catalog.tables());
        assert_eq!(reopened.tables()[1].location, "s3://bucket/some/prefix");
        assert!(reopened.remove("w").unwrap());
        assert!(!reopened.remove("w").unwrap());
        let names: Vec<String> = TableCatalog::open(dir.path())
            .unwrap()
            .tables()
            .into_iter()
            .map(|table| table.name)
            .collect();
        assert_eq!(names, ["x"]);
        assert!(!dir.path().join("sql/tables.json.tmp").exists());
    }
}
