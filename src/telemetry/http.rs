//! The HTTP listener: `/metrics` (Prometheus text), `/health` (200 while the process lives),
//! `/ready` (200 when every direction streams with its lag under the configured bound, else 503
//! with the reasons), `/status` (the live state as JSON, read by `duplex status`).
//!
//! One request per connection, `GET` only: a scraper's and a probe's needs, no more.

use std::net::SocketAddr;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::error::{Error, Result};

/// A request head larger than this is refused.
const MAX_HEAD: usize = 8 * 1024;
/// A client that sends nothing for this long is dropped.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Binds `listen` and serves on a task of its own; also keeps the gauges of the live state and
/// the recorder's upkeep going.
pub async fn serve(
    listen: SocketAddr,
    handle: PrometheusHandle,
    ready_max_lag: Duration,
) -> Result<()> {
    let listener = TcpListener::bind(listen).await.map_err(|e| {
        Error::config(format!(
            "metrics.listen {listen}: cannot listen: {e} (another duplex, or another exporter, may use this port)"
        ))
    })?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let mut n = 0u64;
        loop {
            tick.tick().await;
            super::live().publish(ready_max_lag);
            n += 1;
            if n.is_multiple_of(20) {
                upkeep.run_upkeep();
            }
        }
    });
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let handle = handle.clone();
            tokio::spawn(async move {
                let _ = answer(stream, &handle, ready_max_lag).await;
            });
        }
    });
    Ok(())
}

async fn answer(
    mut stream: tokio::net::TcpStream,
    handle: &PrometheusHandle,
    ready_max_lag: Duration,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = match tokio::time::timeout(READ_TIMEOUT, stream.read(&mut buf)).await {
            Ok(r) => r?,
            Err(_) => return Ok(()),
        };
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > MAX_HEAD {
            return respond(&mut stream, 431, "text/plain", "request head too large\n").await;
        }
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method != "GET" && method != "HEAD" {
        return respond(&mut stream, 405, "text/plain", "only GET\n").await;
    }
    let path = target.split('?').next().unwrap_or("");
    let live = super::live();
    match path {
        "/metrics" => {
            let mut body = handle.render();
            body.push_str(&super::process::render());
            respond(&mut stream, 200, "text/plain; version=0.0.4", &body).await
        }
        "/health" => respond(&mut stream, 200, "text/plain", "ok\n").await,
        "/ready" => {
            let (ready, why) = live.readiness(ready_max_lag);
            if ready {
                respond(&mut stream, 200, "text/plain", "ready\n").await
            } else {
                let body = format!("not ready:\n{}\n", why.join("\n"));
                respond(&mut stream, 503, "text/plain", &body).await
            }
        }
        "/status" => {
            let body = serde_json::to_string(&live.status(ready_max_lag))
                .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
            respond(&mut stream, 200, "application/json", &body).await
        }
        _ => {
            respond(
                &mut stream,
                404,
                "text/plain",
                "not found: try /metrics, /health, /ready or /status\n",
            )
            .await
        }
    }
}

async fn respond(
    stream: &mut tokio::net::TcpStream,
    code: u16,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    };
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

/// A plain `GET` of `path` from a duplex listener: the status code and the body. For
/// `duplex status` and the tests.
pub async fn get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<(u16, String)> {
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await?;
        Ok::<_, std::io::Error>(out)
    };
    let raw = match tokio::time::timeout(timeout, fetch).await {
        Ok(Ok(raw)) => raw,
        Ok(Err(e)) => return Err(Error::config(format!("http://{addr}{path}: {e}"))),
        Err(_) => {
            return Err(Error::config(format!(
                "http://{addr}{path}: no answer in {timeout:?}"
            )))
        }
    };
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| Error::config(format!("http://{addr}{path}: not an HTTP answer")))?;
    Ok((code, body.to_string()))
}
