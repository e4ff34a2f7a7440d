//! The PostgreSQL source: the logical replication protocol spoken directly over a socket
//! ([`stream`]) and the pgoutput message decoder ([`pgoutput`]); the reader that turns the
//! stream into source events ([`source`]), the decoding of text cells ([`decode`]), and the
//! publication the slot reads ([`publication`]).
//!
//! Owns PostgreSQL's replication protocol and output format. Its modules may use the model,
//! errors, configuration, [`crate::tls`] and the checkpoint table's name.

pub mod decode;
pub mod pgoutput;
pub mod publication;
pub mod source;
pub mod stream;

pub use source::PgSource;
