//! Waiting for the streams before a difference counts: a row read on one side at a position is
//! compared with the other side only once the stream has applied everything up to that
//! position (the checkpoint stored on the target has reached it). The heartbeat moves both
//! checkpoints every second even while the shop is idle.
//!
//! Offline (no `duplex run` holds the pipeline) nothing moves, and nothing needs to: the
//! waits return at once.

use std::time::{Duration, Instant};

use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::model::{Lsn, Position, FORWARD, REVERSE};
use crate::state::checkpoint;

/// The sessions that read the checkpoints.
pub struct Streams {
    online: bool,
    reverse: bool,
    timeout: Duration,
    pg: tokio_postgres::Client,
    my: Option<mysql_async::Conn>,
    schema: String,
    database: String,
    pipeline: String,
}

impl Streams {
    /// `online`: a `duplex run` streams this pipeline; `reverse`: it also streams PostgreSQL →
    /// MySQL. A wait gives up after `timeout`.
    pub async fn open(
        cfg: &Config,
        online: bool,
        reverse: bool,
        timeout: Duration,
    ) -> Result<Streams> {
        let pg = crate::connect::postgres(&cfg.postgres, "duplex verify").await?;
        let my = if online && reverse {
            Some(crate::connect::mysql(&cfg.mysql, None, true).await?)
        } else {
            None
        };
        Ok(Streams {
            online,
            reverse,
            timeout,
            pg,
            my,
            schema: cfg.postgres.duplex_schema.clone(),
            database: cfg.mysql.duplex_database.clone(),
            pipeline: cfg.pipeline.clone(),
        })
    }

    pub fn online(&self) -> bool {
        self.online
    }

    /// Waits until MySQL → PostgreSQL has applied everything up to `at` (a MySQL position
    /// read on the source).
    pub async fn forward_reached(&mut self, at: &Position) -> Result<()> {
        if !self.online {
            return Ok(());
        }
        let started = Instant::now();
        loop {
            let cp = checkpoint::load(&self.pg, &self.schema, &self.pipeline, FORWARD).await?;
            if cp.as_ref().is_some_and(|cp| !at.is_after(cp)) {
                return Ok(());
            }
            self.waited(started, FORWARD, at, cp.as_ref())?;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until PostgreSQL → MySQL has applied everything PostgreSQL has committed by now.
    pub async fn reverse_caught_up(&mut self) -> Result<()> {
        if !self.online || !self.reverse {
            return Ok(());
        }
        let row = self
            .pg
            .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
            .await
            .map_err(|e| Error::from_pg(e, true, "reading PostgreSQL's WAL position"))?;
        let at = Position::Postgres(row.get::<_, String>(0).parse::<Lsn>()?);
        self.reverse_reached(&at).await
    }

    /// Waits until PostgreSQL → MySQL has applied everything up to `at` (a PostgreSQL position
    /// read on the source).
    pub async fn reverse_reached(&mut self, at: &Position) -> Result<()> {
        if !self.online || !self.reverse {
            return Ok(());
        }
        let started = Instant::now();
        loop {
            let conn = self
                .my
                .as_mut()
                .expect("a MySQL session when online and reverse");
            let cp = checkpoint::my_load(conn, &self.database, &self.pipeline, REVERSE).await?;
            if cp.as_ref().is_some_and(|cp| !at.is_after(cp)) {
                return Ok(());
            }
            self.waited(started, REVERSE, at, cp.as_ref())?;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn waited(
        &self,
        started: Instant,
        direction: &str,
        at: &Position,
        cp: Option<&Position>,
    ) -> Result<()> {
        if started.elapsed() < self.timeout {
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::Invariant,
            format!(
                "{direction} did not reach {at} within {} s (its checkpoint is {}): the stream is stopped or far behind; \
                 differences cannot be told from lag — run verify again when `duplex status` shows it streaming",
                self.timeout.as_secs(),
                cp.map_or("none".to_string(), |c| c.to_string())
            ),
        ))
    }

    pub async fn close(self) {
        if let Some(c) = self.my {
            let _ = c.disconnect().await;
        }
    }
}
