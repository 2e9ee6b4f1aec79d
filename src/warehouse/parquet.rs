//! Embedded backend: tables are Parquet files on the local file system.
//!
//! Layout: with `warehouse.path = DIR`, a view's table `T` is the directory
//! `DIR/T/` (every `*.parquet` file below it, sub-directories included, read in
//! path order) or the single file `DIR/T.parquet`; `T` resolves like a Snowflake
//! unquoted identifier (exact name first, then case-insensitively). A batch
//! source's database and schema are not part of the path. Files and
//! directories whose names start with `.` or `_` are skipped, so writers can
//! stage a file under a hidden name and rename it into place. Hive-style
//! partition values in directory names are not read as columns.
//!
//! Promises the [`Warehouse`] contract, with these choices:
//! - pages are **not** ordered by `(timestamp, entity)`: rows come in file and
//!   row order. Sync relies on no order across pages (newest-wins makes a late
//!   older row harmless), and sorting a window larger than memory would cost a
//!   spill to disk for nothing;
//! - the window predicate `timestamp > since` is pushed down to row-group
//!   statistics: a row group whose greatest timestamp is not after `since` is
//!   never read, so an incremental run skips untouched files and row groups
//!   (only their footers are read). Row groups that straddle `since` are read
//!   with a row filter on the timestamp column; row groups without statistics
//!   are read and filtered;
//! - only the entity, timestamp and field columns are decoded; pages hold at
//!   most `page_rows` rows and a few pages at most are in flight (the reader's
//!   channel, sync's channel, the page being decoded), so memory stays flat
//!   however large the table;
//! - rows with a NULL entity, or a NULL timestamp on a full read, are delivered
//!   in pages (sync counts them); [`Warehouse::null_key_rows`] is always zero.
//!   A NULL timestamp is never after `since`, so incremental runs leave it out,
//!   as the Snowflake backend does;
//! - reads are repeatable as long as files are replaced atomically (write a
//!   hidden file, then rename); a file changing under a read fails the run.
//!
//! Column types are mapped from their Arrow types ([`column_type`]) to the
//! [`TypeKind`] of the Snowflake type that arrives in the same shape (strings are
//! text, integers and decimals numbers, timestamps without a zone NTZ and with one
//! TZ, lists arrays of their element's kind), so `check` and the column plan judge
//! them with the same rules as Snowflake columns; messages name the Arrow type
//! (`Utf8`, `Int64`). The Arrow-native shapes are decoded by [`super::decode`]. A
//! timestamp without a zone is a TIMESTAMP_NTZ wall time: pages and the window's
//! `since` carry it as stored, and sync reads it in `warehouse.ntz_time_zone` (or
//! the view's own zone; see [`super::zone`]). `now()` is the local clock.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow_array::{Array, BooleanArray, RecordBatch};
use arrow_schema::{ArrowError, DataType, Field, Schema};
use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt};
use parquet::arrow::arrow_reader::statistics::StatisticsConverter;
use parquet::arrow::arrow_reader::{ArrowPredicateFn, ParquetRecordBatchReaderBuilder, RowFilter};
use parquet::arrow::ProjectionMask;
use parquet::errors::ParquetError;
use parquet::file::metadata::ParquetMetaData;

use super::{
    decode, Column, ColumnType, Nanos, NullKeyRows, Page, Result, TableRef, TimestampKind,
    TypeKind, Warehouse, WarehouseError, WindowQuery,
};

/// Pages read ahead of the consumer (one more is being filled by the reader).
const PAGES_AHEAD: usize = 1;

#[derive(Debug, Clone)]
pub struct ParquetWarehouse {
    /// `warehouse.path`: one directory (or `.parquet` file) per table below it.
    root: PathBuf,
    /// `warehouse.ntz_time_zone`: the zone of timestamps without one.
    ntz_time_zone: super::zone::Tz,
}

impl ParquetWarehouse {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        ParquetWarehouse {
            root: root.into(),
            ntz_time_zone: super::zone::Tz::UTC,
        }
    }

    /// The backend `warehouse.kind = "parquet"` configures.
    pub fn from_config(cfg: &crate::config::ParquetConfig) -> anyhow::Result<Self> {
        Ok(ParquetWarehouse::new(&cfg.path).with_ntz_time_zone(cfg.ntz_zone()?))
    }

    /// Timestamps without a zone are wall times in `zone` (see [`Warehouse::ntz_time_zone`]).
    pub fn with_ntz_time_zone(self, zone: super::zone::Tz) -> Self {
        ParquetWarehouse {
            ntz_time_zone: zone,
            ..self
        }
    }

    /// The Parquet files of a table, in path order (see the module doc for the layout).
    pub fn table_files(&self, table: &TableRef) -> Result<Vec<PathBuf>> {
        let path = resolve_table(&self.root, &table.table)?;
        let mut files = Vec::new();
        if path.is_dir() {
            collect_files(&path, &mut files)?;
            if files.is_empty() {
                return Err(WarehouseError::Permanent(format!(
                    "table {table}: no Parquet files in {}",
                    path.display()
                )));
            }
            files.sort();
        } else {
            files.push(path);
        }
        Ok(files)
    }
}

/// `root/name/`, `root/name.parquet`, or the same matched case-insensitively.
fn resolve_table(root: &Path, name: &str) -> Result<PathBuf> {
    let shown = || root.display();
    if name.is_empty() || name.contains(['/', '\\']) || name == "." || name == ".." {
        return Err(WarehouseError::Permanent(format!(
            "table `{name}` is not a plain name (the Parquet warehouse reads {}/{{table}})",
            shown()
        )));
    }
    for candidate in [root.join(name), root.join(format!("{name}.parquet"))] {
        if candidate.exists() {
            return Ok(candidate);
        }
    }
    let entries = std::fs::read_dir(root).map_err(|e| io_error(root, e))?;
    let lower = name.to_lowercase();
    let mut found: Vec<PathBuf> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_error(root, e))?;
        let file_name = entry.file_name().to_string_lossy().to_lowercase();
        let stem = file_name.strip_suffix(".parquet").unwrap_or(&file_name);
        if file_name == lower || (stem == lower && file_name.ends_with(".parquet")) {
            found.push(entry.path());
        }
    }
    found.sort();
    found.into_iter().next().ok_or_else(|| {
        WarehouseError::Permanent(format!(
            "table {name} does not exist: neither {0}/{name}/ nor {0}/{name}.parquet",
            shown()
        ))
    })
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| io_error(dir, e))? {
        let entry = entry.map_err(|e| io_error(dir, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || name.starts_with('_') {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            collect_files(&path, out)?;
        } else if name.to_ascii_lowercase().ends_with(".parquet") {
            out.push(path);
        }
    }
    Ok(())
}

fn io_error(path: &Path, e: std::io::Error) -> WarehouseError {
    let text = format!("{}: {e}", path.display());
    match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
            WarehouseError::Permanent(text)
        }
        _ => WarehouseError::Transient(text),
    }
}

/// I/O trouble may pass (a file replaced mid-read); a malformed file needs a person.
fn parquet_error(path: &Path, e: ParquetError) -> WarehouseError {
    let text = format!("{}: {e}", path.display());
    match e {
        ParquetError::External(inner) if inner.is::<std::io::Error>() => {
            WarehouseError::Transient(text)
        }
        ParquetError::EOF(_) => WarehouseError::Transient(text),
        _ => WarehouseError::Permanent(text),
    }
}

/// The type of a column of this Arrow type: the kind of the Snowflake type whose
/// column arrives in the same shape, so the column plan applies one set of rules
/// to every backend; named by the Arrow type.
pub fn column_type(data_type: &DataType) -> ColumnType {
    let kind = match data_type {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => TypeKind::Text,
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => TypeKind::Number { scale: 0 },
        DataType::Decimal32(_, s)
        | DataType::Decimal64(_, s)
        | DataType::Decimal128(_, s)
        | DataType::Decimal256(_, s) => TypeKind::Number {
            scale: i64::from(*s),
        },
        DataType::Float16 | DataType::Float32 | DataType::Float64 => TypeKind::Float,
        DataType::Boolean => TypeKind::Boolean,
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => TypeKind::Binary,
        DataType::Timestamp(_, None) => TypeKind::Timestamp(TimestampKind::Ntz),
        DataType::Timestamp(_, Some(_)) => TypeKind::Timestamp(TimestampKind::Tz),
        DataType::Date32 | DataType::Date64 => TypeKind::Date,
        DataType::List(item) | DataType::LargeList(item) | DataType::FixedSizeList(item, _) => {
            TypeKind::Array(Some(Box::new(column_type(item.data_type()))))
        }
        _ => TypeKind::Other,
    };
    ColumnType::new(kind, data_type.to_string())
}

/// Index of `name` in `schema`: exact, else case-insensitive.
fn find_field(schema: &Schema, name: &str) -> Option<usize> {
    let fields = schema.fields();
    fields.iter().position(|f| f.name() == name).or_else(|| {
        fields
            .iter()
            .position(|f| f.name().eq_ignore_ascii_case(name))
    })
}

/// Which row groups of a file hold rows after `since`, and whether any of them
/// also holds rows that are not (so rows must be filtered).
#[derive(Debug, PartialEq, Eq)]
struct RowGroupPlan {
    groups: Vec<usize>,
    filter: bool,
}

fn plan_row_groups(
    metadata: &ParquetMetaData,
    schema: &Schema,
    ts_index: usize,
    since: Option<Nanos>,
) -> std::result::Result<RowGroupPlan, ParquetError> {
    let all = (0..metadata.num_row_groups()).collect();
    let Some(since) = since else {
        return Ok(RowGroupPlan {
            groups: all,
            filter: false,
        });
    };
    let field = schema.field(ts_index);
    let stats = StatisticsConverter::try_new(
        field.name(),
        schema,
        metadata.file_metadata().schema_descr(),
    )?
    // Unknown null counts must not be taken as "no NULL timestamps".
    .with_missing_null_counts_as_zero(false);
    let groups = metadata.row_groups();
    let instants = |a: arrow_array::ArrayRef| -> Vec<Option<Nanos>> {
        let f = Field::new(field.name(), a.data_type().clone(), true);
        match decode::timestamps(field.name(), &a, &f) {
            Ok(cells) => cells.into_iter().map(|c| c.ok().flatten()).collect(),
            Err(_) => vec![None; a.len()],
        }
    };
    let maxes = instants(stats.row_group_maxes(groups)?);
    let mins = instants(stats.row_group_mins(groups)?);
    let nulls = stats.row_group_null_counts(groups)?;
    let mut plan = RowGroupPlan {
        groups: Vec::new(),
        filter: false,
    };
    for (i, (max, min)) in maxes.into_iter().zip(mins).enumerate() {
        // Statistics bound the values (a max may be rounded up, a min down), so
        // a bound at or before `since` proves the whole row group is outside.
        if max.is_some_and(|m| m <= since) {
            continue;
        }
        let no_nulls = nulls.is_valid(i) && nulls.value(i) == 0;
        if !(min.is_some_and(|m| m > since) && no_nulls) {
            plan.filter = true;
        }
        plan.groups.push(i);
    }
    Ok(plan)
}

/// Rows whose timestamp is after `since`. A timestamp outside [`Nanos`] is
/// kept, so sync counts it (`timestamp_out_of_range`) instead of it vanishing.
fn after_since(
    name: &str,
    since: Nanos,
    batch: &RecordBatch,
) -> std::result::Result<BooleanArray, ArrowError> {
    let cells = decode::timestamps(name, batch.column(0), batch.schema().field(0))
        .map_err(|e| ArrowError::ComputeError(e.to_string()))?;
    Ok(cells
        .into_iter()
        .map(|c| {
            Some(match c {
                Ok(Some(t)) => t > since,
                Ok(None) => false,
                Err(_) => true,
            })
        })
        .collect())
}

/// Gathers batches into pages of at most `page_rows` rows.
struct PageBuilder {
    page_rows: usize,
    batches: Vec<RecordBatch>,
    rows: usize,
}

impl PageBuilder {
    /// Adds a batch (at most `page_rows` rows); returns a page when one is full.
    fn push(&mut self, batch: RecordBatch) -> Option<Page> {
        let n = batch.num_rows();
        if n == 0 {
            return None;
        }
        let full = if self.rows + n > self.page_rows {
            self.take()
        } else {
            None
        };
        self.rows += n;
        self.batches.push(batch);
        full.or_else(|| (self.rows >= self.page_rows).then(|| self.take()).flatten())
    }

    fn take(&mut self) -> Option<Page> {
        if self.batches.is_empty() {
            return None;
        }
        self.rows = 0;
        Some(Page {
            batches: std::mem::take(&mut self.batches),
        })
    }
}

/// Reads the window on a blocking thread, sending pages as they fill. Stops
/// early (without error) when the receiver is gone.
fn read_window(
    files: &[PathBuf],
    q: &WindowQuery,
    tx: &tokio::sync::mpsc::Sender<Result<Page>>,
) -> Result<()> {
    let mut pages = PageBuilder {
        page_rows: q.page_rows.max(1),
        batches: Vec::new(),
        rows: 0,
    };
    let wanted: Vec<&str> = [q.entity_column.as_str(), q.timestamp_column.as_str()]
        .into_iter()
        .chain(q.field_columns.iter().map(String::as_str))
        .collect();
    for path in files {
        let file = File::open(path).map_err(|e| io_error(path, e))?;
        let builder =
            ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| parquet_error(path, e))?;
        let schema = builder.schema().clone();
        let indices = wanted
            .iter()
            .map(|name| {
                find_field(&schema, name).ok_or_else(|| {
                    WarehouseError::Permanent(format!(
                        "{}: column `{name}` not found (the file has: {})",
                        path.display(),
                        schema
                            .fields()
                            .iter()
                            .map(|f| f.name().as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })
            })
            .collect::<Result<Vec<usize>>>()?;
        let ts_index = indices[1];
        let plan = plan_row_groups(builder.metadata(), &schema, ts_index, q.since)
            .map_err(|e| parquet_error(path, e))?;
        if plan.groups.is_empty() {
            continue;
        }
        // The reader yields projected columns in file order; `order` puts them
        // back in page order (entity, timestamp, fields), repeats allowed.
        let mut roots = indices.clone();
        roots.sort_unstable();
        roots.dedup();
        let order: Vec<usize> = indices
            .iter()
            .map(|i| roots.binary_search(i).expect("present"))
            .collect();
        let parquet_schema = builder.parquet_schema();
        let projection = ProjectionMask::roots(parquet_schema, roots.iter().copied());
        let mut builder = builder
            .with_projection(projection)
            .with_row_groups(plan.groups)
            .with_batch_size(pages.page_rows);
        if let (true, Some(since)) = (plan.filter, q.since) {
            let ts_name = q.timestamp_column.clone();
            let predicate = ArrowPredicateFn::new(
                ProjectionMask::roots(builder.parquet_schema(), [ts_index]),
                move |batch: RecordBatch| after_since(&ts_name, since, &batch),
            );
            builder = builder.with_row_filter(RowFilter::new(vec![Box::new(predicate)]));
        }
        let reader = builder.build().map_err(|e| parquet_error(path, e))?;
        for batch in reader {
            let batch = batch
                .map_err(|e| parquet_error(path, ParquetError::ArrowError(e.to_string())))?
                .project(&order)
                .map_err(|e| WarehouseError::Permanent(format!("{}: {e}", path.display())))?;
            if let Some(page) = pages.push(batch) {
                if tx.blocking_send(Ok(page)).is_err() {
                    return Ok(());
                }
            }
        }
    }
    if let Some(page) = pages.take() {
        let _ = tx.blocking_send(Ok(page));
    }
    Ok(())
}

#[async_trait]
impl Warehouse for ParquetWarehouse {
    async fn describe(&self, table: &TableRef) -> Result<Vec<Column>> {
        let this = self.clone();
        let table = table.clone();
        blocking(move || {
            let files = this.table_files(&table)?;
            let path = &files[0];
            let file = File::open(path).map_err(|e| io_error(path, e))?;
            let builder = ParquetRecordBatchReaderBuilder::try_new(file)
                .map_err(|e| parquet_error(path, e))?;
            Ok(builder
                .schema()
                .fields()
                .iter()
                .map(|f| Column {
                    name: f.name().clone(),
                    data_type: column_type(f.data_type()),
                })
                .collect())
        })
        .await
    }

    async fn now(&self) -> Result<Nanos> {
        Ok(crate::time::now())
    }

    async fn null_key_rows(&self, _query: &WindowQuery) -> Result<NullKeyRows> {
        Ok(NullKeyRows::default())
    }

    fn pages<'a>(&'a self, q: &'a WindowQuery) -> BoxStream<'a, Result<Page>> {
        let this = self.clone();
        let q = q.clone();
        // Started on first poll, so building the stream does no I/O.
        let start = stream::once(async move {
            let (tx, rx) = tokio::sync::mpsc::channel(PAGES_AHEAD);
            let reader = tokio::task::spawn_blocking(move || {
                let outcome = this
                    .table_files(&q.table)
                    .and_then(|files| read_window(&files, &q, &tx));
                if let Err(e) = outcome {
                    let _ = tx.blocking_send(Err(e));
                }
            });
            (rx, Some(reader))
        });
        start
            .flat_map(|state| {
                stream::unfold(state, |(mut rx, reader)| async move {
                    if let Some(page) = rx.recv().await {
                        return Some((page, (rx, reader)));
                    }
                    // The channel closes when the reader returns; a panic there
                    // must not pass for the end of the table.
                    match reader?.await {
                        Ok(()) => None,
                        Err(e) => Some((
                            Err(WarehouseError::Transient(format!(
                                "Parquet reader stopped: {e}"
                            ))),
                            (rx, None),
                        )),
                    }
                })
            })
            .boxed()
    }

    fn ntz_time_zone(&self) -> super::zone::Tz {
        self.ntz_time_zone
    }

    async fn ping(&self) -> Result<()> {
        let root = self.root.clone();
        blocking(move || {
            if root.is_dir() {
                std::fs::read_dir(&root).map_err(|e| io_error(&root, e))?;
                Ok(())
            } else {
                Err(WarehouseError::Permanent(format!(
                    "warehouse.path {} is not a directory",
                    root.display()
                )))
            }
        })
        .await
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| WarehouseError::Transient(format!("Parquet reader stopped: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{ArrayRef, Int32Array, StringArray, TimestampMicrosecondArray};
    use parquet::arrow::ArrowWriter;
    use parquet::file::properties::WriterProperties;
    use std::sync::Arc;

    const SEC: i64 = 1_000_000_000;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "materializer-parquet-{name}-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Writes rows (entity, seconds, value) with `per_group` rows per row group.
    fn write(path: &Path, rows: &[(Option<&str>, Option<i64>, i32)], per_group: usize) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("DOMAIN_USERID", DataType::Utf8, true),
            Field::new(
                "UPDATED_AT",
                DataType::Timestamp(arrow_schema::TimeUnit::Microsecond, None),
                true,
            ),
            Field::new("VISITS", DataType::Int32, true),
        ]));
        let cols: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter(rows.iter().map(|r| r.0))),
            Arc::new(TimestampMicrosecondArray::from_iter(
                rows.iter().map(|r| r.1.map(|s| s * 1_000_000)),
            )),
            Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.2))),
        ];
        let batch = RecordBatch::try_new(schema.clone(), cols).unwrap();
        let props = WriterProperties::builder()
            .set_max_row_group_size(per_group)
            .build();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut w = ArrowWriter::try_new(File::create(path).unwrap(), schema, Some(props)).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
    }

    fn query(since: Option<Nanos>, page_rows: usize) -> WindowQuery {
        WindowQuery {
            table: TableRef {
                database: None,
                schema: None,
                table: "events".into(),
            },
            entity_column: "DOMAIN_USERID".into(),
            timestamp_column: "UPDATED_AT".into(),
            timestamp_type: column_type(&DataType::Timestamp(
                arrow_schema::TimeUnit::Nanosecond,
                None,
            )),
            field_columns: vec!["VISITS".into(), "DOMAIN_USERID".into()],
            since,
            page_rows,
        }
    }

    /// (entity, seconds, visits) of every row of every page, and the page sizes.
    async fn read_all(
        wh: &ParquetWarehouse,
        q: &WindowQuery,
    ) -> (Vec<(String, i64, i32)>, Vec<usize>) {
        let pages: Vec<Page> = wh.pages(q).map(|p| p.unwrap()).collect::<Vec<_>>().await;
        let mut rows = Vec::new();
        for p in &pages {
            for b in &p.batches {
                assert_eq!(
                    b.num_columns(),
                    4,
                    "entity, timestamp, VISITS, DOMAIN_USERID"
                );
                let e = decode::entities("e", b.column(0), b.schema().field(0)).unwrap();
                let again = decode::entities("e", b.column(3), b.schema().field(3)).unwrap();
                let ts = decode::timestamps("t", b.column(1), b.schema().field(1)).unwrap();
                let v = b.column(2).as_any().downcast_ref::<Int32Array>().unwrap();
                for (i, t) in ts.iter().enumerate() {
                    assert_eq!(e.get(i), again.get(i));
                    rows.push((
                        e.get(i).unwrap_or("NULL").to_string(),
                        t.unwrap().map_or(-1, |t| t / SEC),
                        v.value(i),
                    ));
                }
            }
        }
        rows.sort();
        (rows, pages.iter().map(Page::num_rows).collect())
    }

    #[tokio::test]
    async fn full_read_delivers_every_row_including_null_keys_in_bounded_pages() {
        let root = scratch("full");
        write(
            &root.join("events/part-0.parquet"),
            &[
                (Some("a"), Some(10), 1),
                (None, Some(11), 2),
                (Some("b"), None, 3),
            ],
            2,
        );
        write(
            &root.join("events/day=2/part-1.parquet"),
            &[(Some("c"), Some(20), 4)],
            2,
        );
        // Hidden and staging files are not part of the table.
        write(
            &root.join("events/.tmp-part-2.parquet"),
            &[(Some("x"), Some(1), 9)],
            2,
        );
        write(
            &root.join("events/_staging/part-3.parquet"),
            &[(Some("y"), Some(1), 9)],
            2,
        );
        let wh = ParquetWarehouse::new(&root);
        let (rows, pages) = read_all(&wh, &query(None, 2)).await;
        assert_eq!(
            rows,
            vec![
                ("NULL".into(), 11, 2),
                ("a".into(), 10, 1),
                ("b".into(), -1, 3),
                ("c".into(), 20, 4)
            ]
        );
        assert!(pages.iter().all(|&n| n <= 2), "{pages:?}");
        assert_eq!(
            wh.null_key_rows(&query(None, 2)).await.unwrap(),
            NullKeyRows::default()
        );
    }

    #[tokio::test]
    async fn incremental_read_keeps_only_rows_after_since() {
        let root = scratch("window");
        write(
            &root.join("events/part-0.parquet"),
            &[
                (Some("a"), Some(10), 1),
                (Some("b"), Some(30), 2),
                (Some("c"), None, 3),
                (Some("d"), Some(20), 4),
            ],
            4,
        );
        let wh = ParquetWarehouse::new(&root);
        let (rows, _) = read_all(&wh, &query(Some(20 * SEC), 10)).await;
        assert_eq!(rows, vec![("b".into(), 30, 2)]);
    }

    #[test]
    fn row_groups_entirely_before_since_are_pruned_by_statistics() {
        let root = scratch("prune");
        let path = root.join("t.parquet");
        // Three row groups: [1, 2], [3, 4], [5, NULL].
        write(
            &path,
            &[
                (Some("a"), Some(1), 0),
                (Some("b"), Some(2), 0),
                (Some("c"), Some(3), 0),
                (Some("d"), Some(4), 0),
                (Some("e"), Some(5), 0),
                (Some("f"), None, 0),
            ],
            2,
        );
        let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(&path).unwrap()).unwrap();
        let plan = |since| plan_row_groups(builder.metadata(), builder.schema(), 1, since).unwrap();
        assert_eq!(
            plan(None),
            RowGroupPlan {
                groups: vec![0, 1, 2],
                filter: false
            }
        );
        // Group 0 ends at 2s: skipped. Group 1 starts after 2s and has no NULLs:
        // no filter needed, but group 2 holds a NULL timestamp.
        assert_eq!(
            plan(Some(2 * SEC)),
            RowGroupPlan {
                groups: vec![1, 2],
                filter: true
            }
        );
        assert_eq!(
            plan(Some(4 * SEC)),
            RowGroupPlan {
                groups: vec![2],
                filter: true
            }
        );
        assert_eq!(
            plan(Some(5 * SEC)),
            RowGroupPlan {
                groups: vec![],
                filter: false
            }
        );
        // Straddling `since` needs the row filter.
        assert_eq!(
            plan(Some(SEC)),
            RowGroupPlan {
                groups: vec![0, 1, 2],
                filter: true
            }
        );
    }

    #[tokio::test]
    async fn tables_resolve_as_directories_or_single_files_case_insensitively() {
        let root = scratch("resolve");
        write(&root.join("EVENTS.parquet"), &[(Some("a"), Some(1), 1)], 2);
        let wh = ParquetWarehouse::new(&root);
        let table = |name: &str| TableRef {
            database: Some("ANY_DB".into()),
            schema: None,
            table: name.into(),
        };
        assert_eq!(
            wh.table_files(&table("events")).unwrap(),
            vec![root.join("EVENTS.parquet")]
        );
        let cols = wh.describe(&table("EVENTS")).await.unwrap();
        let types: Vec<(&str, &TypeKind, String)> = cols
            .iter()
            .map(|c| (c.name.as_str(), &c.data_type.kind, c.data_type.to_string()))
            .collect();
        assert_eq!(
            types,
            vec![
                ("DOMAIN_USERID", &TypeKind::Text, "Utf8".into()),
                (
                    "UPDATED_AT",
                    &TypeKind::Timestamp(TimestampKind::Ntz),
                    "Timestamp(µs)".into()
                ),
                ("VISITS", &TypeKind::Number { scale: 0 }, "Int32".into())
            ]
        );
        let missing = wh.describe(&table("nope")).await.unwrap_err();
        assert!(
            !missing.is_retryable() && missing.to_string().contains("nope"),
            "{missing}"
        );
        assert!(wh.table_files(&table("../etc")).is_err());
    }

    #[test]
    fn arrow_types_map_to_snowflake_types_the_column_plan_accepts() {
        use crate::model::FieldType;
        let ts = DataType::Timestamp(arrow_schema::TimeUnit::Millisecond, Some("UTC".into()));
        assert!(decode::timestamp_compatible(&column_type(&ts)).is_ok());
        assert!(decode::timestamp_compatible(&column_type(&DataType::Date32)).is_ok());
        assert!(decode::timestamp_compatible(&column_type(&DataType::Int64)).is_err());
        assert!(decode::entity_compatible(&column_type(&DataType::Int64)).is_ok());
        let cases = [
            (DataType::Int32, FieldType::Int32),
            (DataType::Int64, FieldType::Int64),
            (DataType::Float32, FieldType::Float),
            (DataType::Float64, FieldType::Double),
            (DataType::Boolean, FieldType::Bool),
            (DataType::Utf8, FieldType::String),
            (DataType::Binary, FieldType::Bytes),
            (ts.clone(), FieldType::UnixTimestamp),
            (
                DataType::List(Arc::new(Field::new("item", DataType::Int64, true))),
                FieldType::Int64List,
            ),
        ];
        for (arrow, field) in cases {
            let t = column_type(&arrow);
            assert!(
                decode::compatible(&t, field).is_ok(),
                "{arrow} as {t} for {field}"
            );
        }
        let e = decode::compatible(&column_type(&DataType::Utf8), FieldType::Int32).unwrap_err();
        assert!(e.contains("a Utf8 column") && e.contains("int32"), "{e}");
    }
}
