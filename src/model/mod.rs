//! The change model shared by every source and sink: transactions of row changes over a closed
//! [`Value`] enum, with printable, ordered source positions and the table schemas they refer to.
//!
//! Sources produce it, the mapping reads it, sinks consume what the mapping makes of it; none of
//! those depend on each other, only on this module.
//!
//! May use: the error type only; every other module uses it.

pub mod change;
pub mod direction;
pub mod position;
pub mod schema;
pub mod value;

pub use change::{Image, Op, RowChange, SourceEvent, TxnBegin, TxnCommit};
pub use direction::{
    is_own_origin, origin_name, own_prefix, slot_name, Way, DLQ_WRITER, FORWARD, REVERSE,
    STREAM_WRITER,
};
pub use position::{
    BinlogFile, GtidState, Lsn, MariaGtidList, MysqlGtidSet, MysqlPosition, Position,
};
pub use schema::{
    my_ident, pg_ident, pg_literal, ColumnSchema, SourceType, TableName, TableSchema, TargetColumn,
    TargetKind, TargetTable,
};
pub use value::{Date, DateTime, Value};
