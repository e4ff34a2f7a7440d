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
//! [`sink`], which commits the changes together with the source position
//! ([`state::checkpoint`]). After any crash the pipeline resumes from that checkpoint, so nothing
//! is lost or applied twice. The way back (PostgreSQL slot → MySQL) is the same flow mirrored.
//!
//! Modules import only from the layers below them:
//!
//! ```text
//!  main (the binary)
//!  commands        check, setup, run, snapshot, status, dlq, teardown: thin, print results
//!  pipeline  dlq  heartbeat     the stream and its retry loop; dead-letter retry; lag writer
//!  snapshot                     the initial copy, resumable, handed over to the stream
//!  source  sink                 binlog / pgoutput readers; batched writers with checkpoint
//!  mapping  telemetry  origin   the compiled plan (and its loading); metrics, live state, HTTP;
//!                               echo marking
//!  state  catalog               duplex's own tables on both sides; live table definitions
//!  connect                      sessions to both databases (TLS, timeouts)
//!  model  config  error  tls    the change model, positions, directions and names; settings
//! ```

pub mod catalog;
pub mod commands;
pub mod config;
pub mod connect;
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
pub mod state;
pub mod telemetry;
pub mod tls;
pub mod verify;

pub use error::{Error, ErrorKind, Result};
