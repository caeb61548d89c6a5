//! TLS to PostgreSQL, with libpq's `sslmode` semantics, so a cluster can reach a managed or
//! remote database over an encrypted connection. Every connection the store makes (pool,
//! `LISTEN`, lease renewal, scratch databases) goes through [`parse`] or [`connect`].
//!
//! The URL's `sslmode` picks the behaviour, as libpq does:
//!
//! * `disable`: no TLS;
//! * `prefer` (the default): TLS if the server offers it, without verifying its certificate;
//!   except when every host of the URL is a loopback address (`localhost`, `127.0.0.0/8`,
//!   `::1`) or a Unix socket: the connection never leaves the machine, so encrypting it only
//!   costs CPU on both ends (about 7% of a queue drain's, `docs/PERFORMANCE.md`), and `prefer`
//!   connects in plain text there. `require` and the `verify-*` modes still encrypt;
//! * `require`: TLS or fail, the certificate *not* verified (encryption only, like libpq:
//!   the handshake's signatures are still checked, so the peer holds the key of the
//!   certificate it shows, but anyone's certificate is accepted);
//! * `verify-ca`: TLS, the certificate chain verified against the roots;
//! * `verify-full`: `verify-ca` plus the host name checked against the certificate.
//!
//! The roots are the PEM file `sslrootcert=FILE` (libpq's parameter) or, without it (or with
//! `sslrootcert=system`), the webpki roots. tokio-postgres knows neither `verify-*` nor
//! `sslrootcert`, so they are taken out of a URL (`postgres://…?…`) before it parses the rest.
//! rustls runs with the *ring* provider reqwest already uses.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres::config::SslMode;
use tokio_postgres::tls::MakeTlsConnect;

/// The TLS connector every PostgreSQL connection of cloro uses (its `sslmode` is in the
/// [`tokio_postgres::Config`] that goes with it).
pub type Tls = tokio_postgres_rustls::MakeRustlsConnect;

/// A connection's driver, to be spawned.
pub type Connection = tokio_postgres::Connection<
    tokio_postgres::Socket,
    <Tls as MakeTlsConnect<tokio_postgres::Socket>>::Stream,
>;

/// How the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verify {
    /// `disable`, `prefer`, `require`: not at all.
    None,
    /// `verify-ca`: the chain only.
    Ca,
    /// `verify-full`: the chain and the host name.
    Full,
}

/// libpq's `sslmode` values: the mode tokio-postgres connects with, and how the server's
/// certificate is checked.
const SSL_MODES: [(&str, SslMode, Verify); 6] = [
    ("disable", SslMode::Disable, Verify::None),
    // libpq's `allow` (plain first, TLS if refused) is closest to `prefer` here.
    ("allow", SslMode::Prefer, Verify::None),
    ("prefer", SslMode::Prefer, Verify::None),
    ("require", SslMode::Require, Verify::None),
    ("verify-ca", SslMode::Require, Verify::Ca),
    ("verify-full", SslMode::Require, Verify::Full),
];

/// The connection settings of `url` and the TLS connector its `sslmode` asks for.
pub fn parse(url: &str) -> Result<(tokio_postgres::Config, Tls), String> {
    let (rest, mode, rootcert) = split_tls_params(url)?;
    let mut cfg: tokio_postgres::Config = rest
        .parse()
        .map_err(|e| format!("invalid PostgreSQL URL: {e}"))?;
    let verify = match mode.as_deref() {
        // None in a URL: tokio-postgres's default (`prefer`), or a `key=value` string's own.
        None => Verify::None,
        Some(name) => {
            let &(_, ssl_mode, verify) =
                SSL_MODES.iter().find(|m| m.0 == name).ok_or_else(|| {
                    format!(
                        "invalid PostgreSQL URL: unknown sslmode `{name}` (disable, allow, prefer, \
                         require, verify-ca or verify-full)"
                    )
                })?;
            cfg.ssl_mode(ssl_mode);
            verify
        }
    };
    if cfg.get_ssl_mode() == SslMode::Prefer && stays_on_this_machine(&cfg) {
        cfg.ssl_mode(SslMode::Disable);
    }
    Ok((cfg, connector(verify, rootcert.as_deref())?))
}

/// Whether every host `cfg` may connect to is this machine: a loopback name or address, or a
/// Unix socket (also the `hostaddr`s, which replace the hosts' addresses when given).
fn stays_on_this_machine(cfg: &tokio_postgres::Config) -> bool {
    use tokio_postgres::config::Host;
    let hosts = cfg.get_hosts();
    let loopback = |h: &Host| match h {
        Host::Tcp(name) => {
            name.eq_ignore_ascii_case("localhost")
                || name
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        #[cfg(unix)]
        Host::Unix(_) => true,
    };
    !hosts.is_empty()
        && cfg.get_hostaddrs().iter().all(|ip| ip.is_loopback())
        && (!cfg.get_hostaddrs().is_empty() || hosts.iter().all(loopback))
}

/// Connects to `url` (see [`parse`]); the returned driver must be spawned.
pub async fn connect(url: &str) -> Result<(tokio_postgres::Client, Connection), String> {
    let (cfg, tls) = parse(url)?;
    cfg.connect(tls).await.map_err(|e| e.to_string())
}

/// `url` without `sslmode` and `sslrootcert` (URL form only; a `key=value` string is left
/// to tokio-postgres, which knows `sslmode=disable|prefer|require`), and their values.
type Split = (String, Option<String>, Option<String>);
fn split_tls_params(url: &str) -> Result<Split, String> {
    let is_url = url.starts_with("postgres://") || url.starts_with("postgresql://");
    let Some((base, query)) = url.split_once('?').filter(|_| is_url) else {
        return Ok((url.to_owned(), None, None));
    };
    let (mut mode, mut rootcert) = (None, None);
    let mut kept = Vec::new();
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "sslmode" => mode = Some(percent_decode(value)?),
            "sslrootcert" => rootcert = Some(percent_decode(value)?),
            _ => kept.push(pair),
        }
    }
    let rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((rest, mode, rootcert))
}

/// Decodes `%XX` escapes of a URL parameter's value.
fn percent_decode(value: &str) -> Result<String, String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = value
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("invalid PostgreSQL URL: bad escape in `{value}`"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("invalid PostgreSQL URL: `{value}` is not UTF-8"))
}

/// The rustls connector for `verify`, with the roots of `rootcert` (a PEM file) or webpki's.
fn connector(verify: Verify, rootcert: Option<&str>) -> Result<Tls, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?;
    let config = match verify {
        Verify::None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(
                provider.signature_verification_algorithms,
            )))
            .with_no_client_auth(),
        Verify::Ca | Verify::Full => {
            let roots = Arc::new(roots(rootcert)?);
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| format!("cannot set up TLS: {e}"))?;
            if verify == Verify::Full {
                builder.with_webpki_verifier(webpki).with_no_client_auth()
            } else {
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(AnyName(webpki)))
                    .with_no_client_auth()
            }
        }
    };
    Ok(Tls::new(config))
}

/// The trusted roots: every certificate of the PEM file `rootcert`, or webpki's.
fn roots(rootcert: Option<&str>) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    match rootcert {
        None | Some("system") => {
            store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("cannot read sslrootcert `{path}`: {e}"))?;
            if certs.is_empty() {
                return Err(format!(
                    "cannot read sslrootcert `{path}`: no PEM certificate in it"
                ));
            }
            for cert in certs {
                store
                    .add(cert)
                    .map_err(|e| format!("cannot use sslrootcert `{path}`: {e}"))?;
            }
        }
    }
    Ok(store)
}

/// `sslmode=prefer|require`: any certificate is accepted (encryption without
/// authentication, as libpq does), but the handshake's signatures are verified.
#[derive(Debug)]
struct AnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// `sslmode=verify-ca`: the chain is verified, the host name is not.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
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
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
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
    fn tls_parameters_are_taken_out_of_the_url() {
        let (rest, mode, root) = split_tls_params(
            "postgres://u@h:5/db?sslmode=verify-full&application_name=x&sslrootcert=%2Ftmp%2Fca.pem",
        )
        .expect("splits");
        assert_eq!(rest, "postgres://u@h:5/db?application_name=x");
        assert_eq!(mode.as_deref(), Some("verify-full"));
        assert_eq!(root.as_deref(), Some("/tmp/ca.pem"));
        let (rest, mode, _) =
            split_tls_params("postgres://u@h/db?sslmode=require").expect("splits");
        assert_eq!(
            (rest.as_str(), mode.as_deref()),
            ("postgres://u@h/db", Some("require"))
        );
    }

    #[test]
    fn prefer_stays_plain_on_loopback_only() {
        let mode = |url: &str| parse(url).expect("parses").0.get_ssl_mode();
        for url in [
            "postgres://u@127.0.0.1:5432/db",
            "postgres://u@localhost/db",
            "postgres://u@127.0.0.2/db?sslmode=prefer",
            "postgres://u@[::1]:5432/db",
            "postgres://u@localhost,127.0.0.1/db?sslmode=allow",
            "postgres://u@db.internal/db?hostaddr=127.0.0.1",
            "host=/var/run/postgresql user=u",
        ] {
            assert_eq!(mode(url), SslMode::Disable, "{url}");
        }
        for url in [
            "postgres://u@db.internal/db",
            "postgres://u@10.0.0.5/db",
            "postgres://u@localhost,db.internal/db",
            "postgres://u@localhost/db?hostaddr=10.0.0.5",
        ] {
            assert_eq!(mode(url), SslMode::Prefer, "{url}");
        }
        for url in [
            "postgres://u@127.0.0.1/db?sslmode=require",
            "postgres://u@localhost/db?sslmode=verify-full",
        ] {
            assert_eq!(mode(url), SslMode::Require, "{url}");
        }
    }

    #[test]
    fn a_bad_sslmode_or_rootcert_is_a_clear_error() {
        let Err(e) = parse("postgres://h/db?sslmode=sometimes") else {
            panic!("accepted")
        };
        assert!(e.contains("unknown sslmode `sometimes`"), "{e}");
        let Err(e) = parse("postgres://h/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem")
        else {
            panic!("accepted")
        };
        assert!(
            e.contains("cannot read sslrootcert `/nonexistent/ca.pem`"),
            "{e}"
        );
    }
}
