//! duplex keeps a 1C-Bitrix MySQL/MariaDB database and a CRM's PostgreSQL database in sync by
//! change data capture.
//!
//! ```text
//!  MySQL binlog ──▶ source::mysql ──▶ model (txns of row changes) ──▶ mapping plan ──▶ sink::postgres
//!                   (decode, group                                    (TOML, typed,     (batched upserts,
//!                    into txns)                                        checked live)     checkpoint in the
//!                                                                                          same transaction)
//! ```
//!
//! Flow: a [`source`] reads committed transactions in commit order and emits them as
//! [`model::SourceEvent`]s; the [`pipeline`] maps and encodes every row change through the
//! compiled [`mapping::Plan`], groups transactions into target transactions and hands them to a
//! [`sink`], which commits the changes together with the source position ([`checkpoint`]). After
//! any crash the pipeline resumes from that checkpoint, so nothing is lost or applied twice.

pub mod app;
pub mod checkpoint;
pub mod config;
pub mod dlq;
pub mod error;
pub mod heartbeat;
pub mod mapping;
pub mod model;
pub mod origin;
pub mod pipeline;
pub mod sink;
pub mod snapshot;
pub mod source;
pub mod telemetry;
pub mod tls;

pub use error::{Error, ErrorKind, Result};
