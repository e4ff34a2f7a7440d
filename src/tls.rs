//! TLS for every connection duplex makes, with libpq's `sslmode` levels on both sides:
//!
//! | sslmode | encrypted | server certificate checked |
//! |---|---|---|
//! | `disable` | no | — |
//! | `prefer` | when the server offers TLS | no |
//! | `require` | yes, or the connection fails | no |
//! | `verify-ca` | yes | signed by a trusted CA |
//! | `verify-full` | yes | signed by a trusted CA and naming the host connected to |
//!
//! Trusted CAs: the `sslrootcert` file when given, else the system's trust store. A client
//! certificate (`sslcert` + `sslkey`) is sent when the server asks for one. The default is
//! `verify-full` for any host that is not loopback, `disable` on loopback (the traffic never
//! leaves the machine).
//!
//! PostgreSQL queries and writes go through tokio-postgres with a rustls connector, the
//! replication connection through our own client (`SSLRequest`, then tokio-rustls), MySQL
//! (queries, writes and the binlog stream) through mysql_async's rustls support.
//!
//! May use: the error type only; `config` and `connect` use it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use serde::Deserialize;

use crate::error::{Error, ErrorKind, Result};

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// The default for a host: `disable` on loopback, `verify-full` elsewhere.
    pub fn default_for(host: &str) -> SslMode {
        let loopback = host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if loopback {
            SslMode::Disable
        } else {
            SslMode::VerifyFull
        }
    }
}

/// One side's TLS settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    pub mode: SslMode,
    /// CA certificates (PEM) trusted instead of the system's.
    pub root_cert: Option<PathBuf>,
    /// Client certificate chain (PEM) and its private key (PEM).
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

impl Tls {
    pub fn disabled() -> Tls {
        Tls {
            mode: SslMode::Disable,
            root_cert: None,
            client_cert: None,
            client_key: None,
        }
    }

    /// Whether the connection must be encrypted.
    pub fn required(&self) -> bool {
        !matches!(self.mode, SslMode::Disable | SslMode::Prefer)
    }

    /// The rustls client configuration of these settings (None for `disable`).
    pub fn client_config(&self) -> Result<Option<Arc<ClientConfig>>> {
        if self.mode == SslMode::Disable {
            return Ok(None);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = Arc::new(self.roots()?);
        let verifier: Arc<dyn ServerCertVerifier> = match self.mode {
            SslMode::Disable | SslMode::Prefer | SslMode::Require => {
                Arc::new(AnyCertificate(provider.clone()))
            }
            SslMode::VerifyCa | SslMode::VerifyFull => {
                let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                    .build()
                    .map_err(|e| config(format!("TLS: cannot use the trusted CAs: {e}")))?;
                if self.mode == SslMode::VerifyCa {
                    Arc::new(ChainOnly(webpki))
                } else {
                    webpki
                }
            }
        };
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| config(format!("TLS: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let config = match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => {
                let chain = read_certs(cert)?;
                let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                    config(format!(
                        "sslkey {}: cannot read a PEM private key: {e}",
                        key.display()
                    ))
                })?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| config(format!("sslcert/sslkey: {e}")))?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => {
                return Err(config(
                    "sslcert and sslkey go together: set both or neither".into(),
                ))
            }
        };
        Ok(Some(Arc::new(config)))
    }

    fn roots(&self) -> Result<RootCertStore> {
        let mut roots = RootCertStore::empty();
        match &self.root_cert {
            Some(path) => {
                for cert in read_certs(path)? {
                    roots
                        .add(cert)
                        .map_err(|e| config(format!("sslrootcert {}: {e}", path.display())))?;
                }
            }
            None if matches!(self.mode, SslMode::VerifyCa | SslMode::VerifyFull) => {
                let found = rustls_native_certs::load_native_certs();
                for cert in found.certs {
                    let _ = roots.add(cert);
                }
                if roots.is_empty() {
                    return Err(config(format!(
                        "sslmode {} without sslrootcert needs the system's trust store, and none was found ({}); install ca-certificates or set sslrootcert",
                        self.mode.as_str(),
                        found.errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; ")
                    )));
                }
            }
            None => {}
        }
        Ok(roots)
    }

    /// The CA certificates and client identity as mysql_async takes them.
    pub fn mysql_opts(&self) -> Result<Option<mysql_async::SslOpts>> {
        use mysql_async::{ClientIdentity, SslOpts};
        if self.mode == SslMode::Disable {
            return Ok(None);
        }
        let mut opts = SslOpts::default()
            .with_danger_accept_invalid_certs(!matches!(
                self.mode,
                SslMode::VerifyCa | SslMode::VerifyFull
            ))
            .with_danger_skip_domain_validation(self.mode != SslMode::VerifyFull);
        if matches!(self.mode, SslMode::VerifyCa | SslMode::VerifyFull) {
            // The same trust as for PostgreSQL: the file, or the system's store (not the
            // bundle compiled into the driver).
            let certs = self
                .roots_der()?
                .into_iter()
                .map(|c| c.as_ref().to_vec().into())
                .collect();
            opts = opts
                .with_disable_built_in_roots(true)
                .with_root_certs(certs);
        }
        if let (Some(cert), Some(key)) = (&self.client_cert, &self.client_key) {
            opts = opts.with_client_identity(Some(ClientIdentity::new(
                cert.clone().into(),
                key.clone().into(),
            )));
        } else if self.client_cert.is_some() != self.client_key.is_some() {
            return Err(config(
                "sslcert and sslkey go together: set both or neither".into(),
            ));
        }
        Ok(Some(opts))
    }

    fn roots_der(&self) -> Result<Vec<CertificateDer<'static>>> {
        match &self.root_cert {
            Some(path) => read_certs(path),
            None => Ok(rustls_native_certs::load_native_certs().certs),
        }
    }

    /// An operator-facing explanation of a failed TLS connection, from the driver's message;
    /// None when the message is not about TLS.
    pub fn explain(&self, message: &str, host: &str) -> Option<String> {
        let trust = match &self.root_cert {
            Some(p) => format!("sslrootcert {}", p.display()),
            None => "the system's trust store".to_string(),
        };
        let m = message;
        if m.contains("NotValidForName") {
            Some(format!(
                "TLS: the server's certificate does not name host {host:?} (sslmode {}): connect by a name the certificate holds, or use sslmode = \"verify-ca\"",
                self.mode.as_str()
            ))
        } else if m.contains("UnknownIssuer") || m.contains("BadSignature") {
            Some(format!(
                "TLS: the server's certificate is not signed by a CA in {trust} (sslmode {})",
                self.mode.as_str()
            ))
        } else if m.contains("Expired") || m.contains("NotValidYet") {
            Some(format!(
                "TLS: the server's certificate is expired or not yet valid: {m}"
            ))
        } else if offers_no_tls(m) {
            Some(self.not_offered(host))
        } else if m.contains("invalid peer certificate")
            || m.contains("TLS handshake")
            || (m.contains("tls") && m.contains("alert"))
        {
            Some(format!("TLS (sslmode {}): {m}", self.mode.as_str()))
        } else {
            None
        }
    }

    /// Why a server that offers no TLS is refused, and what to do.
    pub fn not_offered(&self, host: &str) -> String {
        format!(
            "TLS: the server at {host} does not offer TLS, and sslmode {} requires it: enable TLS on the server, or set sslmode = \"prefer\" or \"disable\"",
            self.mode.as_str()
        )
    }

    /// The server name to check the certificate against.
    pub fn server_name(host: &str) -> Result<ServerName<'static>> {
        ServerName::try_from(host.to_string())
            .map_err(|e| config(format!("TLS: {host:?} is not a host name or address: {e}")))
    }
}

/// Whether a driver's error says the server offers no TLS (tokio-postgres after an `N` to
/// its SSLRequest; mysql_async for a handshake without CLIENT_SSL).
pub fn offers_no_tls(message: &str) -> bool {
    message.contains("server does not support TLS")
        || message.contains("does not have this capability")
        || message.contains("NoClientSslFlagFromServer")
}

fn config(message: String) -> Error {
    Error::new(ErrorKind::Config, message)
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect())
        .map_err(|e| {
            config(format!(
                "{}: cannot read PEM certificates: {e}",
                path.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(config(format!(
            "{}: holds no PEM certificate",
            path.display()
        )));
    }
    Ok(certs)
}

/// `require` / `prefer`: encryption without checking who answers (libpq's semantics).
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to a trusted CA; the name is not checked.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_modes() {
        assert_eq!(SslMode::default_for("127.0.0.1"), SslMode::Disable);
        assert_eq!(SslMode::default_for("localhost"), SslMode::Disable);
        assert_eq!(SslMode::default_for("::1"), SslMode::Disable);
        assert_eq!(
            SslMode::default_for("db.example.supabase.co"),
            SslMode::VerifyFull
        );
        assert_eq!(SslMode::default_for("10.0.0.5"), SslMode::VerifyFull);
        let mut t = Tls::disabled();
        assert!(t.client_config().unwrap().is_none());
        t.mode = SslMode::Require;
        assert!(t.client_config().unwrap().is_some());
        t.client_cert = Some("/nonexistent.pem".into());
        let e = t.client_config().unwrap_err();
        assert!(
            e.to_string().contains("sslcert and sslkey go together"),
            "{e}"
        );
        t.client_cert = None;
        t.mode = SslMode::VerifyFull;
        t.root_cert = Some("/nonexistent-ca.pem".into());
        let e = t.client_config().unwrap_err();
        assert!(
            e.to_string()
                .contains("/nonexistent-ca.pem: cannot read PEM certificates"),
            "{e}"
        );
    }
}
