//! The live table definitions of both databases, read from their catalogs: MySQL/MariaDB
//! source tables ([`mysql`]) and PostgreSQL tables ([`postgres`]). The mapping compiles against
//! them, the binlog source decodes with them (cached per table version), `check` reports on them.
//! Uses the model, the error type and an open session only.

pub mod mysql;
pub mod postgres;
