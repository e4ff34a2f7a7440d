//! The PostgreSQL source: the logical replication protocol spoken directly over a socket
//! ([`stream`]) and the pgoutput message decoder ([`pgoutput`]).

pub mod decode;
pub mod pgoutput;
pub mod source;
pub mod stream;

pub use source::PgSource;
