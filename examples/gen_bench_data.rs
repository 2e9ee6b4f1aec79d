//! Writes Parquet tables for the benchmark (`scripts/bench.sh`) and the quickstart.
//!
//! ```text
//! gen_bench_data full      --dir DIR --table T --rows N --entities M [--files F] [--row-group R]
//! gen_bench_data increment --dir DIR --table T --rows N --entities M
//! gen_bench_data csv       --input FILE.csv --output FILE.parquet
//! gen_bench_data ids       --entities M --count N
//! ```
//!
//! `full` writes the reference shape: a string entity `DOMAIN_USERID` and
//! `TOTAL_TRANSACTIONS` (int32), `TOTAL_REVENUE` (int64), `AVG_ORDER_VALUE`
//! (float), `FAVOURITE_CATEGORY` (string), `IS_RETURNING` (bool), `UPDATED_AT`
//! (timestamp, UTC). Rows are stamped over the 30 days ending one hour ago, in
//! time order across files (as an export appended over time is), entities
//! shuffled within; with `rows = k × entities` every entity has k versions,
//! each newer than the last. `increment` adds one file of rows updating random
//! existing entities, stamped within the last minute: what an incremental run
//! has to find. `csv` converts the quickstart's example CSV (integers become
//! int64, `YYYY-MM-DD HH:MM:SS[.fff]` a UTC-less timestamp, the rest text).
//! `ids` prints `count` entity ids of a `full` table of `entities` entities,
//! one a line, for the read benchmark (`examples/read_load.rs`).
//! Output is deterministic apart from the clock.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{
    ArrayRef, BooleanArray, Float32Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use clap::{Parser, Subcommand};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// A whole table: `rows` rows over `entities` entities.
    Full {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        table: String,
        #[arg(long)]
        rows: usize,
        #[arg(long)]
        entities: usize,
        #[arg(long, default_value_t = 10)]
        files: usize,
        #[arg(long, default_value_t = 100_000)]
        row_group: usize,
    },
    /// One more file: `rows` updates of random existing entities, stamped now.
    Increment {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        table: String,
        #[arg(long)]
        rows: usize,
        #[arg(long)]
        entities: usize,
    },
    /// Converts a CSV file with a header line to one Parquet file.
    Csv {
        #[arg(long)]
        input: PathBuf,
        #[arg(long)]
        output: PathBuf,
    },
    /// Entity ids of a `full` table, picked at random, one a line.
    Ids {
        #[arg(long)]
        entities: usize,
        #[arg(long)]
        count: usize,
    },
}

const US_PER_S: i64 = 1_000_000;
const CATEGORIES: [&str; 8] = [
    "books",
    "garden",
    "toys",
    "electronics",
    "fashion",
    "grocery",
    "sports",
    "beauty",
];

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Full {
            dir,
            table,
            rows,
            entities,
            files,
            row_group,
        } => full(&dir.join(&table), rows, entities, files.max(1), row_group),
        Command::Increment {
            dir,
            table,
            rows,
            entities,
        } => increment(&dir.join(&table), rows, entities),
        Command::Csv { input, output } => csv(&input, &output),
        Command::Ids { entities, count } => {
            let mut rng = StdRng::seed_from_u64(7);
            for _ in 0..count {
                println!("{}", entity(rng.gen_range(0..entities.max(1))));
            }
            Ok(())
        }
    }
}

/// A UUID-shaped id, the same for the same index in every run.
fn entity(i: usize) -> String {
    let h = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let l = h.rotate_left(29) ^ 0xD6E8_FEB8_6659_FD93;
    format!(
        "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
        h >> 32,
        (h >> 16) & 0xffff,
        h & 0xfff,
        l >> 52,
        l & 0xffff_ffff_ffff
    )
}

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("DOMAIN_USERID", DataType::Utf8, false),
        Field::new("TOTAL_TRANSACTIONS", DataType::Int32, true),
        Field::new("TOTAL_REVENUE", DataType::Int64, true),
        Field::new("AVG_ORDER_VALUE", DataType::Float32, true),
        Field::new("FAVOURITE_CATEGORY", DataType::Utf8, true),
        Field::new("IS_RETURNING", DataType::Boolean, true),
        Field::new(
            "UPDATED_AT",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ]))
}

/// One batch of rows: (entity index, version, timestamp in µs).
fn batch(rows: &[(usize, usize, i64)], rng: &mut StdRng) -> anyhow::Result<RecordBatch> {
    let tx: Vec<i32> = rows
        .iter()
        .map(|&(_, v, _)| v as i32 + rng.gen_range(1..20))
        .collect();
    let revenue: Vec<i64> = tx
        .iter()
        .map(|&t| t as i64 * rng.gen_range(500..20_000))
        .collect();
    let avg: Vec<f32> = tx
        .iter()
        .zip(&revenue)
        .map(|(&t, &r)| r as f32 / t as f32 / 100.0)
        .collect();
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|&(e, _, _)| entity(e)),
        )),
        Arc::new(Int32Array::from(tx)),
        Arc::new(Int64Array::from(revenue)),
        Arc::new(Float32Array::from(avg)),
        Arc::new(StringArray::from_iter_values(
            rows.iter()
                .map(|_| CATEGORIES[rng.gen_range(0..CATEGORIES.len())]),
        )),
        Arc::new(BooleanArray::from_iter(
            rows.iter()
                .map(|&(_, v, _)| Some(v > 0 || rng.gen_bool(0.3))),
        )),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(rows.iter().map(|&(_, _, t)| t))
                .with_timezone("UTC"),
        ),
    ];
    Ok(RecordBatch::try_new(schema(), cols)?)
}

fn write(
    path: &Path,
    rows: &[(usize, usize, i64)],
    row_group: usize,
    rng: &mut StdRng,
) -> anyhow::Result<()> {
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_size(row_group.max(1))
        .build();
    // Written under a hidden name and renamed, so a reader never sees half a file.
    let tmp = path.with_file_name(format!(".{}", path.file_name().unwrap().to_string_lossy()));
    let mut w = ArrowWriter::try_new(File::create(&tmp)?, schema(), Some(props))?;
    for part in rows.chunks(65_536) {
        w.write(&batch(part, rng)?)?;
    }
    w.close()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

fn full(
    dir: &Path,
    rows: usize,
    entities: usize,
    files: usize,
    row_group: usize,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        entities > 0 && rows > 0,
        "rows and entities must be positive"
    );
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    let mut rng = StdRng::seed_from_u64(42);
    let end = now_us() - 3600 * US_PER_S;
    let span = 30 * 86_400 * US_PER_S;
    let step = (span / rows as i64).max(1);
    let start = end - step * rows as i64;
    // Version v of every entity (shuffled) comes before version v + 1 of any.
    let mut order: Vec<usize> = (0..entities).collect();
    let mut all = Vec::with_capacity(rows);
    let mut version = 0;
    while all.len() < rows {
        order.shuffle(&mut rng);
        for &e in order.iter().take(rows - all.len()) {
            let t = start + step * all.len() as i64;
            all.push((e, version, t));
        }
        version += 1;
    }
    let per_file = rows.div_ceil(files);
    for (k, part) in all.chunks(per_file).enumerate() {
        write(
            &dir.join(format!("part-{k:05}.parquet")),
            part,
            row_group,
            &mut rng,
        )?;
    }
    println!(
        "wrote {rows} rows, {entities} entities, {} files to {}",
        rows.div_ceil(per_file),
        dir.display()
    );
    Ok(())
}

fn increment(dir: &Path, rows: usize, entities: usize) -> anyhow::Result<()> {
    anyhow::ensure!(
        dir.is_dir(),
        "{} does not exist: run `full` first",
        dir.display()
    );
    let mut rng = StdRng::seed_from_u64(now_us() as u64);
    let end = now_us();
    let step = (60 * US_PER_S / rows.max(1) as i64).max(1);
    let picked: Vec<(usize, usize, i64)> = (0..rows)
        .map(|i| {
            (
                rng.gen_range(0..entities),
                1000,
                end - step * (rows - i) as i64,
            )
        })
        .collect();
    let name = format!("part-inc-{end}.parquet");
    write(&dir.join(&name), &picked, rows.max(1), &mut rng)?;
    println!("wrote {rows} updated rows to {}", dir.join(name).display());
    Ok(())
}

fn csv(input: &Path, output: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(input)?;
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    anyhow::ensure!(
        rows.iter().all(|r| r.len() == header.len()),
        "every line needs {} comma-separated cells (quoted cells are not supported)",
        header.len()
    );
    let parse_ts = |s: &str| {
        chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f")
            .ok()
            .map(|t| t.and_utc().timestamp_micros())
    };
    let mut fields = Vec::new();
    let mut cols: Vec<ArrayRef> = Vec::new();
    for (i, name) in header.iter().enumerate() {
        let cells: Vec<&str> = rows.iter().map(|r| r[i]).collect();
        let (dt, col): (DataType, ArrayRef) = if cells.iter().all(|c| c.parse::<i64>().is_ok()) {
            (
                DataType::Int64,
                Arc::new(Int64Array::from_iter_values(
                    cells.iter().map(|c| c.parse().unwrap()),
                )),
            )
        } else if cells.iter().all(|c| parse_ts(c).is_some()) {
            (
                DataType::Timestamp(TimeUnit::Microsecond, None),
                Arc::new(TimestampMicrosecondArray::from_iter_values(
                    cells.iter().map(|c| parse_ts(c).unwrap()),
                )),
            )
        } else {
            (
                DataType::Utf8,
                Arc::new(StringArray::from_iter_values(cells)),
            )
        };
        fields.push(Field::new(*name, dt, true));
        cols.push(col);
    }
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(schema.clone(), cols)?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    if let Some(parent) = output.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut w = ArrowWriter::try_new(File::create(output)?, schema, Some(props))?;
    w.write(&batch)?;
    w.close()?;
    println!("wrote {} rows to {}", batch.num_rows(), output.display());
    Ok(())
}
