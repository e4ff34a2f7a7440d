//! The PostgreSQL source: the logical replication protocol spoken directly over a socket
//! ([`stream`]) and the pgoutput message decoder ([`pgoutput`]).

pub mod pgoutput;
pub mod stream;
