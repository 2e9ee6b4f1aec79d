//! Column type compatibility: whether a column, by the type a backend's
//! `describe` reports, can feed a field, be the entity or be the timestamp.
//!
//! # Contract
//!
//! Promises: [`compatible`], [`timestamp_compatible`] and [`entity_compatible`]
//! accept a [`ColumnType`] exactly when the Arrow shape a column of that type
//! arrives in is decoded by [`super::encode_column`], [`super::timestamps`] and
//! [`super::entities`] (values may still be skipped one by one), so `check` and
//! the column plan refuse a view before any row is read. A refusal names the
//! column's type as the warehouse does (its [`ColumnType`] Display) and says what
//! would fit.
//!
//! Assumes each backend maps its types to [`TypeKind`]s whose shapes `shapes.rs`
//! decodes: Snowflake's type names (`warehouse::snowflake::column_type`; a bare
//! `NUMBER`, as INFORMATION_SCHEMA prints it, is scale 0) and Parquet's Arrow
//! types (`warehouse::parquet::column_type`).

use crate::model::FieldType;
use crate::warehouse::{ColumnType, TypeKind};

/// What each field type can be fed from, for error messages.
pub(super) fn feeds(ty: FieldType) -> &'static str {
    match ty {
        FieldType::Int32 | FieldType::Int64 | FieldType::Double | FieldType::Float => {
            "it takes NUMBER, INT or FLOAT columns"
        }
        FieldType::UnixTimestamp => {
            "it takes TIMESTAMP_NTZ/LTZ/TZ or DATE columns, or numbers of epoch seconds"
        }
        FieldType::Bool => "it takes BOOLEAN columns",
        FieldType::String => {
            "it takes VARCHAR columns (cast a VARIANT in the view, e.g. `v::STRING`)"
        }
        FieldType::Bytes => "it takes BINARY or VARCHAR columns",
        _ => "it takes ARRAY or VARIANT columns holding JSON arrays, or VARCHAR JSON text",
    }
}

/// Whether a column of `column_type` can feed the field type; Err(reason) names both types.
///
/// Agrees with [`super::encode_column`]: a type accepted here arrives in an Arrow
/// shape that decodes (values may still be skipped one by one).
pub fn compatible(column_type: &ColumnType, ty: FieldType) -> Result<(), String> {
    let kind = &column_type.kind;
    let fits = match ty.element() {
        Some(element) => match kind {
            TypeKind::Array(Some(inner)) => {
                return compatible(inner, element).map_err(|_| {
                    format!(
                        "a {column_type} column cannot feed a {ty} field: its {inner} elements cannot feed {element}"
                    )
                });
            }
            TypeKind::Array(None) | TypeKind::Variant | TypeKind::Text => true,
            _ => false,
        },
        None => match ty {
            FieldType::Int32 | FieldType::Int64 | FieldType::Double | FieldType::Float => {
                matches!(kind, TypeKind::Number { .. } | TypeKind::Float)
            }
            FieldType::UnixTimestamp => matches!(
                kind,
                TypeKind::Number { .. } | TypeKind::Float | TypeKind::Timestamp(_) | TypeKind::Date
            ),
            FieldType::Bool => *kind == TypeKind::Boolean,
            FieldType::String => *kind == TypeKind::Text,
            FieldType::Bytes => matches!(kind, TypeKind::Binary | TypeKind::Text),
            _ => false,
        },
    };
    if fits {
        Ok(())
    } else {
        Err(format!(
            "a {column_type} column cannot feed a {ty} field: {}",
            feeds(ty)
        ))
    }
}

/// Whether a column type can be a view's timestamp field (TIMESTAMP_* or DATE).
pub fn timestamp_compatible(column_type: &ColumnType) -> Result<(), String> {
    match column_type.kind {
        TypeKind::Timestamp(_) | TypeKind::Date => Ok(()),
        _ => Err(format!(
            "a {column_type} column cannot be the timestamp field: it must be TIMESTAMP_NTZ/LTZ/TZ or DATE"
        )),
    }
}

/// Whether a column type can hold entity values (VARCHAR or whole numbers).
pub fn entity_compatible(column_type: &ColumnType) -> Result<(), String> {
    match column_type.kind {
        TypeKind::Text | TypeKind::Number { scale: 0 } => Ok(()),
        _ => Err(format!(
            "a {column_type} column cannot be the entity: it must be VARCHAR or a whole NUMBER"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::warehouse::snowflake::column_type;

    // Snowflake's type names, parsed as its `describe` does; Parquet's Arrow
    // types are checked in `warehouse::parquet`.
    #[test]
    fn warehouse_type_names_decide_compatibility() {
        use FieldType::*;
        let ok: &[(&str, &[FieldType])] = &[
            (
                "NUMBER(38,0)",
                &[Int32, Int64, Double, Float, UnixTimestamp],
            ),
            (
                "NUMBER(10,2)",
                &[Int32, Int64, Double, Float, UnixTimestamp],
            ),
            ("number", &[Int64]),
            ("INT", &[Int32, Int64]),
            ("BIGINT", &[Int64, Double]),
            ("FLOAT", &[Double, Float, Int64]),
            ("DOUBLE", &[Double]),
            ("VARCHAR(16777216)", &[String, Bytes, StringList, Int32List]),
            ("TEXT", &[String]),
            ("STRING", &[String]),
            ("BOOLEAN", &[Bool]),
            ("BINARY(8388608)", &[Bytes]),
            ("TIMESTAMP_NTZ(9)", &[UnixTimestamp]),
            ("TIMESTAMP_LTZ(9)", &[UnixTimestamp]),
            ("TIMESTAMP_TZ(9)", &[UnixTimestamp]),
            ("TIMESTAMP WITH TIME ZONE", &[UnixTimestamp]),
            ("DATE", &[UnixTimestamp]),
            (
                "ARRAY",
                &[
                    Int32List,
                    StringList,
                    UnixTimestampList,
                    BoolList,
                    BytesList,
                ],
            ),
            ("VARIANT", &[DoubleList, FloatList, Int64List]),
            ("ARRAY(NUMBER(38,0))", &[Int64List, DoubleList]),
            ("INTEGER", &[Int32]),
            ("JSON", &[StringList]),
            ("varchar not null", &[String]),
        ];
        for (name, types) in ok {
            for ty in *types {
                assert_eq!(
                    compatible(&column_type(name), *ty),
                    Ok(()),
                    "{name} -> {ty}"
                );
            }
        }
        let refused: &[(&str, FieldType)] = &[
            ("VARCHAR(16777216)", Int32),
            ("TEXT", UnixTimestamp),
            ("NUMBER(38,0)", String),
            ("NUMBER(38,0)", Bool),
            ("BOOLEAN", Int32),
            ("BINARY", String),
            ("TIMESTAMP_NTZ(9)", Int64),
            ("TIME(9)", UnixTimestamp),
            ("ARRAY", String),
            ("VARIANT", String),
            ("OBJECT", StringList),
            ("NUMBER(38,0)", Int32List),
            ("ARRAY(VARCHAR)", Int32List),
            ("GEOGRAPHY", Bytes),
        ];
        for (name, ty) in refused {
            let e = compatible(&column_type(name), *ty).unwrap_err();
            assert!(e.contains(name) && e.contains(ty.name()), "{e}");
        }
    }

    #[test]
    fn timestamp_and_entity_columns_are_checked_by_type_name() {
        for ok in [
            "TIMESTAMP_NTZ(9)",
            "TIMESTAMP_LTZ(3)",
            "TIMESTAMP_TZ(9)",
            "TIMESTAMP",
            "DATETIME",
            "DATE",
        ] {
            assert_eq!(timestamp_compatible(&column_type(ok)), Ok(()), "{ok}");
        }
        for bad in ["NUMBER(38,0)", "VARCHAR(16777216)", "TIME(9)", "VARIANT"] {
            assert!(timestamp_compatible(&column_type(bad))
                .unwrap_err()
                .contains(bad));
        }
        for ok in [
            "VARCHAR(16777216)",
            "TEXT",
            "NUMBER(38,0)",
            "BIGINT",
            "NUMBER",
        ] {
            assert_eq!(entity_compatible(&column_type(ok)), Ok(()), "{ok}");
        }
        for bad in [
            "NUMBER(10,2)",
            "FLOAT",
            "BINARY",
            "VARIANT",
            "TIMESTAMP_NTZ(9)",
        ] {
            assert!(entity_compatible(&column_type(bad))
                .unwrap_err()
                .contains(bad));
        }
    }
}
