//! The column types `pg_catalog` shows tools: psql's `\d`, JDBC's `getColumns`, the schema
//! browsers of BI tools. `datafusion-pg-catalog`'s `pg_attribute` lists a column whose type it
//! has no entry for as `text`, and `timestamp with time zone` (the type of every topic's
//! `_timestamp`) is one of them. Its tables read the schemas through [`CatalogInfo`], so
//! [`PgTypes`] hands them the schemas with such timestamps (UTC instants) as timestamps without
//! a time zone, which `pg_attribute` shows as `timestamp`: a date and time to a tool, rather
//! than text. Only the catalog's view changes: the rows of a query still describe `_timestamp`
//! as `timestamptz`.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::CatalogProviderList;
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::TableType;
use datafusion::prelude::SessionContext;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::catalog_info::CatalogInfo;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::{
    self as pg, PgCatalogSchemaProvider, PgCatalogStaticTables, format_type, has_privilege_udf,
    pg_get_expr_udf, quote_ident_udf,
};

/// Registers the schema `pg_catalog` in `catalog`, its tables reading the session's catalogs
/// through [`PgTypes`], and the functions tools call with it, as `setup_pg_catalog` of
/// `datafusion-pg-catalog` 0.17 does (which takes the catalogs as they are). Its static tables
/// are loaded once: loading them a second time to replace its schema kept 5 MiB more resident.
pub fn register_pg_catalog(context: &SessionContext, catalog: &str) -> Result<()> {
    let static_tables = Arc::new(PgCatalogStaticTables::try_new()?);
    let schema = PgCatalogSchemaProvider::try_new(
        PgTypes(Arc::clone(context.state().catalog_list())),
        Arc::clone(&static_tables),
        EmptyContextProvider,
    )?;
    context
        .catalog(catalog)
        .ok_or_else(|| DataFusionError::Internal(format!("catalog {catalog} not registered")))?
        .register_schema("pg_catalog", Arc::new(schema))?;
    let privileges = [
        "has_table_privilege",
        "has_schema_privilege",
        "has_database_privilege",
        "has_any_column_privilege",
    ];
    let functions = [
        pg::create_current_database_udf(),
        pg::create_current_schema_udf(),
        pg::create_current_schemas_udf(),
        pg::create_pg_get_userbyid_udf(),
        pg::create_pg_table_is_visible(),
        format_type::create_format_type_udf(),
        pg::create_session_user_udf(),
        pg_get_expr_udf::create_pg_get_expr_udf(),
        pg::create_pg_get_partkeydef_udf(),
        pg::create_pg_relation_is_publishable_udf(),
        pg::create_pg_get_statisticsobjdef_columns_udf(),
        pg::create_pg_encoding_to_char_udf(),
        pg::create_pg_backend_pid_udf(),
        pg::create_pg_relation_size_udf(),
        pg::create_pg_total_relation_size_udf(),
        pg::create_pg_stat_get_numscans(),
        pg::create_pg_get_constraintdef(),
        pg::create_pg_get_partition_ancestors_udf(),
        quote_ident_udf::create_quote_ident_udf(),
        quote_ident_udf::create_parse_ident_udf(),
    ];
    for function in functions.into_iter().chain(
        privileges
            .into_iter()
            .map(has_privilege_udf::create_has_privilege_udf),
    ) {
        context.register_udf(function);
    }
    context.register_udtf("pg_get_keywords", static_tables.pg_get_keywords.clone());
    Ok(())
}

/// The session's catalogs as `pg_catalog` should describe them.
#[derive(Debug, Clone)]
pub struct PgTypes(pub Arc<dyn CatalogProviderList>);

#[async_trait]
impl CatalogInfo for PgTypes {
    async fn catalog_names(&self) -> Result<Vec<String>, DataFusionError> {
        self.0.catalog_names().await
    }

    async fn schema_names(&self, catalog: &str) -> Result<Option<Vec<String>>, DataFusionError> {
        CatalogInfo::schema_names(&self.0, catalog).await
    }

    async fn table_names(
        &self,
        catalog: &str,
        schema: &str,
    ) -> Result<Option<Vec<String>>, DataFusionError> {
        CatalogInfo::table_names(&self.0, catalog, schema).await
    }

    async fn table_schema(
        &self,
        catalog: &str,
        schema: &str,
        table: &str,
    ) -> Result<Option<SchemaRef>, DataFusionError> {
        let found = CatalogInfo::table_schema(&self.0, catalog, schema, table).await?;
        Ok(found.map(as_shown))
    }

    async fn table_type(
        &self,
        catalog: &str,
        schema: &str,
        table: &str,
    ) -> Result<Option<TableType>, DataFusionError> {
        CatalogInfo::table_type(&self.0, catalog, schema, table).await
    }
}

/// `schema` with each timestamp column's time zone dropped.
fn as_shown(schema: SchemaRef) -> SchemaRef {
    let zoned = |field: &Field| matches!(field.data_type(), DataType::Timestamp(_, Some(_)));
    if !schema.fields().iter().any(|field| zoned(field)) {
        return schema;
    }
    let fields: Fields = schema
        .fields()
        .iter()
        .map(|field| match field.data_type() {
            DataType::Timestamp(unit, Some(_)) => Arc::new(
                field
                    .as_ref()
                    .clone()
                    .with_data_type(DataType::Timestamp(*unit, None)),
            ),
            _ => Arc::clone(field),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

#[cfg(test)]
mod tests {
    use arrow::datatypes::TimeUnit;

    use super::*;

    /// The same functions as `setup_pg_catalog`, and a pg_catalog showing `_timestamp`-like
    /// columns as `timestamp`.
    #[tokio::test]
    async fn registers_what_setup_pg_catalog_does() {
        use datafusion::catalog::MemoryCatalogProvider;
        let contexts = [SessionContext::new(), SessionContext::new()];
        for context in &contexts {
            context.register_catalog("c", Arc::new(MemoryCatalogProvider::new()));
        }
        pg::setup_pg_catalog(&contexts[0], "c", EmptyContextProvider).unwrap();
        register_pg_catalog(&contexts[1], "c").unwrap();
        let [theirs, ours] = contexts.each_ref().map(|context| {
            let state = context.state();
            let mut names: Vec<String> = state.scalar_functions().keys().cloned().collect();
            names.extend(
                state
                    .table_functions()
                    .keys()
                    .map(|name| format!("{name}()")),
            );
            names.sort();
            names
        });
        assert_eq!(ours, theirs);

        let context = &contexts[1];
        let schema = context.catalog("c").unwrap().schema("pg_catalog").unwrap();
        assert!(schema.table_exist("pg_attribute"));
        context
            .sql("CREATE TABLE t (at TIMESTAMP WITH TIME ZONE, n BIGINT)")
            .await
            .unwrap();
        let batches = context
            .sql(
                "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM c.pg_catalog.pg_attribute a \
                 JOIN c.pg_catalog.pg_class r ON a.attrelid = r.oid WHERE r.relname = 't' ORDER BY a.attnum",
            )
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let shown = arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string();
        let rows: Vec<Vec<&str>> = shown
            .lines()
            .filter(|line| line.starts_with("| "))
            .map(|line| {
                line.split('|')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .collect();
        assert_eq!(
            rows[1..],
            [["at", "timestamp without time zone"], ["n", "bigint"]],
            "{shown}"
        );
    }

    #[test]
    fn zoned_timestamps_are_shown_without_their_zone() {
        let utc = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
        let schema = Arc::new(Schema::new(vec![
            Field::new("_timestamp", utc, false),
            Field::new("n", DataType::Int64, true),
        ]));
        let shown = as_shown(schema);
        assert_eq!(
            shown.field(0).data_type(),
            &DataType::Timestamp(TimeUnit::Millisecond, None)
        );
        assert!(!shown.field(0).is_nullable());
        assert_eq!(shown.field(1).data_type(), &DataType::Int64);
    }
}
