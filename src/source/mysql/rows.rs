//! Row-event decoding: turns the row images of a WRITE/UPDATE/DELETE rows event into
//! [`RowChange`]s.
//!
//! The column layout of a table (binlog type and type metadata per column) is worked out once
//! per table map event ([`RowLayout`]); each value is then read straight from the event bytes
//! with the binlog value parser, and converted with the table's column facts ([`decode`]). This
//! avoids the generic row reader's per-row work (re-walking the metadata of every column and
//! building a column description per value), which dominated the cost of wide tables.
//!
//! May use value decoding ([`decode`]), the model and errors; does no I/O.

use std::sync::Arc;

use mysql_async::binlog::events::{RowsEventData, TableMapEvent};
use mysql_common::binlog::value::BinlogValue;
use mysql_common::constants::ColumnType;
use mysql_common::io::ParseBuf;

use super::decode::decode;
use crate::error::{Error, ErrorKind, Result};
use crate::model::{Image, Op, RowChange, TableSchema, Value};

/// Binlog type and type metadata of each column of one table map.
#[derive(Debug)]
pub struct RowLayout {
    columns: Vec<(ColumnType, Vec<u8>)>,
}

impl RowLayout {
    pub fn new(tme: &TableMapEvent<'_>) -> Result<RowLayout> {
        let n = tme.columns_count() as usize;
        let mut columns = Vec::with_capacity(n);
        for i in 0..n {
            let ty = match tme.get_column_type(i) {
                Ok(Some(t)) => t,
                _ => {
                    return Err(Error::new(
                        ErrorKind::SourceDefinite,
                        format!(
                            "table map of {}.{}: column {i} has an unknown binlog type",
                            tme.database_name(),
                            tme.table_name()
                        ),
                    ))
                }
            };
            let meta = tme.get_column_metadata(i).unwrap_or(&[]).to_vec();
            columns.push((ty, meta));
        }
        Ok(RowLayout { columns })
    }
}

fn short(what: &str, schema: &TableSchema) -> Error {
    Error::new(
        ErrorKind::SourceDefinite,
        format!("rows event of {} ends inside {what}", schema.name),
    )
}

/// Reads one row image: the null bitmap of the present columns, then each non-null value.
fn read_image<'a>(
    buf: &mut &'a [u8],
    present: &[bool],
    layout: &'a RowLayout,
    schema: &TableSchema,
) -> Result<Vec<Value>> {
    let count = present.iter().filter(|p| **p).count();
    if count != schema.columns.len() || present.len() != layout.columns.len() {
        return Err(Error::new(
            ErrorKind::ServerSetting,
            format!(
                "a row image of {} has {count} of {} columns: binlog_row_image must be FULL",
                schema.name,
                schema.columns.len()
            ),
        ));
    }
    let null_len = count.div_ceil(8);
    if buf.len() < null_len {
        return Err(short("a null bitmap", schema));
    }
    let (nulls, rest) = buf.split_at(null_len);
    *buf = rest;
    let mut values = Vec::with_capacity(count);
    let mut image_index = 0;
    for (i, (ty, meta)) in layout.columns.iter().enumerate() {
        if !present[i] {
            continue;
        }
        let is_null = nulls[image_index / 8] & (1 << (image_index % 8)) != 0;
        image_index += 1;
        let col = &schema.columns[values.len()];
        if is_null {
            values.push(Value::Null);
            continue;
        }
        let mut pb = ParseBuf(buf);
        // Signedness is applied from the column facts in `decode`, so the parser reads raw.
        let raw: BinlogValue<'_> = pb
            .parse((*ty, meta.as_slice(), false, false))
            .map_err(|e| {
                Error::new(
                    ErrorKind::SourceDefinite,
                    format!("decoding column {} of {}: {e}", col.name, schema.name),
                )
            })?;
        *buf = pb.0;
        // A value that cannot be converted (an ENUM index past its labels, binary JSON that does
        // not parse) is kept as unreadable: only a mapping that uses the column turns it into a
        // dead letter; the stream goes on.
        values.push(match decode(raw, col) {
            Ok(v) => v,
            Err(e) if e.kind() == ErrorKind::Convert => Value::Unreadable(e.to_string()),
            Err(e) => return Err(e.context(format!("table {}", schema.name))),
        });
    }
    Ok(values)
}

/// Appends the row changes of one rows event to `out`.
pub fn decode_rows(
    event: &RowsEventData<'_>,
    layout: &RowLayout,
    schema: &Arc<TableSchema>,
    out: &mut Vec<RowChange>,
) -> Result<()> {
    let op = match event {
        RowsEventData::WriteRowsEvent(_) | RowsEventData::WriteRowsEventV1(_) => Op::Insert,
        RowsEventData::UpdateRowsEvent(_) | RowsEventData::UpdateRowsEventV1(_) => Op::Update,
        RowsEventData::DeleteRowsEvent(_) | RowsEventData::DeleteRowsEventV1(_) => Op::Delete,
        RowsEventData::PartialUpdateRowsEvent(_) => {
            return Err(Error::new(
                ErrorKind::ServerSetting,
                format!(
                "partial JSON update of {} in the binlog: SET GLOBAL binlog_row_value_options = ''",
                schema.name
            ),
            ))
        }
    };
    let n = event.num_columns() as usize;
    let before_cols: Vec<bool> = event
        .columns_before_image()
        .map(|b| {
            (0..n)
                .map(|i| b.get(i).map(|x| *x).unwrap_or(false))
                .collect()
        })
        .unwrap_or_default();
    let after_cols: Vec<bool> = event
        .columns_after_image()
        .map(|b| {
            (0..n)
                .map(|i| b.get(i).map(|x| *x).unwrap_or(false))
                .collect()
        })
        .unwrap_or_default();
    let mut buf = event.rows_data();
    while !buf.is_empty() {
        let before = match op {
            Op::Update | Op::Delete => Some(read_image(&mut buf, &before_cols, layout, schema)?),
            Op::Insert => None,
        };
        let after = match op {
            Op::Update | Op::Insert => Some(read_image(&mut buf, &after_cols, layout, schema)?),
            Op::Delete => None,
        };
        out.push(RowChange {
            table: schema.clone(),
            op,
            before,
            after,
            image: Image::Full,
        });
    }
    Ok(())
}
