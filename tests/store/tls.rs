//! Cluster mode over TLS (PostgreSQL only; skipped without `CLORO_TEST_PG`, or when the server
//! has `ssl = off` unless `CLORO_REQUIRE_PG_TLS` is set): the URL's `sslmode` decides whether
//! the store's connections are encrypted and how the server's certificate is checked.

use cloro::store::postgres::{PgConfig, PgStore};
use cloro::store::{Error, Store};
use cloro::testing::TestDb;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use x509_cert::der::Decode;

/// The certificate Debian's PostgreSQL serves by default.
const SNAKEOIL: &str = "/etc/ssl/certs/ssl-cert-snakeoil.pem";

/// A throw-away self-signed CA that signed nothing (so no server certificate chains to it).
const UNTRUSTED_CA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/untrusted-ca.pem"
);

fn cluster() -> PgConfig {
    PgConfig {
        lease_ms: 600_000,
        heartbeat_ms: 3_600_000,
        poll_ms: 1_000,
        pool_size: 2,
        ..PgConfig::default()
    }
}

/// A fresh database's URL (no query string) when the server can do TLS; `None` (said why)
/// otherwise.
async fn tls_database() -> Option<(TestDb, String)> {
    let Some(admin_url) = cloro::testing::pg_admin_url() else {
        cloro::testing::announce_pg_skipped();
        return None;
    };
    let (client, conn) = tokio_postgres::connect(&admin_url, tokio_postgres::NoTls)
        .await
        .expect("connects");
    tokio::spawn(conn);
    let ssl: String = client
        .query_one("SHOW ssl", &[])
        .await
        .expect("SHOW ssl")
        .get(0);
    if ssl != "on" {
        assert!(
            std::env::var_os("CLORO_REQUIRE_PG_TLS").is_none(),
            "CLORO_REQUIRE_PG_TLS is set but the server has ssl = {ssl}"
        );
        eprintln!("TLS tests SKIPPED: the PostgreSQL server has ssl = {ssl}");
        return None;
    }
    let db = TestDb::postgres(&admin_url).await.expect("test database");
    let cloro::store::Database::Postgres(url) = db.database.clone() else {
        unreachable!("a PostgreSQL database")
    };
    Some((db, url))
}

/// `(connections, encrypted ones)` among the other sessions on `url`'s database, read on a
/// plain connection of the test's own.
async fn sessions(url: &str) -> (i64, i64) {
    let base = url.split_once('?').map_or(url, |(base, _)| base);
    let (client, conn) =
        tokio_postgres::connect(&format!("{base}?sslmode=disable"), tokio_postgres::NoTls)
            .await
            .expect("connects");
    tokio::spawn(conn);
    let row = client
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE s.ssl) FROM pg_stat_activity a \
             JOIN pg_stat_ssl s USING (pid) \
             WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()",
            &[],
        )
        .await
        .expect("pg_stat_ssl");
    (row.get(0), row.get(1))
}

/// Opens a store on `url` and reports its sessions; the store is closed after.
async fn open_and_count(url: &str) -> (i64, i64) {
    let store = PgStore::open(url, cluster()).await.expect("store opens");
    // The pool's connection is open; also wait for the `LISTEN` connection (bounded).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut seen = sessions(url).await;
    while seen.0 < 2 && std::time::Instant::now() < deadline {
        tokio::task::yield_now().await;
        seen = sessions(url).await;
    }
    store.close();
    store.closed().await;
    seen
}

#[tokio::test]
async fn sslmode_require_encrypts_every_connection() {
    let Some((_db, url)) = tls_database().await else {
        return;
    };
    let (all, encrypted) = open_and_count(&format!("{url}?sslmode=require")).await;
    assert!(all >= 2, "the pool and the listener are connected ({all})");
    assert_eq!(encrypted, all, "every connection of the store is encrypted");
}

#[tokio::test]
async fn the_default_encrypts_except_on_loopback() {
    let Some((_db, url)) = tls_database().await else {
        return;
    };
    let (all, encrypted) = open_and_count(&url).await;
    assert!(all >= 2, "the pool and the listener are connected ({all})");
    let host = url
        .split_once('@')
        .map_or("", |(_, rest)| rest)
        .split('/')
        .next()
        .unwrap_or("");
    if ["localhost", "127.", "[::1]"]
        .iter()
        .any(|l| host.starts_with(l))
    {
        assert_eq!(encrypted, 0, "prefer on loopback ({host}) stays plain");
    } else {
        assert_eq!(encrypted, all, "prefer to {host} encrypts every connection");
    }
}

#[tokio::test]
async fn sslmode_disable_does_not_encrypt() {
    let Some((_db, url)) = tls_database().await else {
        return;
    };
    let (all, encrypted) = open_and_count(&format!("{url}?sslmode=disable")).await;
    assert!(all >= 2, "the pool and the listener are connected ({all})");
    assert_eq!(encrypted, 0, "no connection is encrypted");
}

#[tokio::test]
async fn verify_full_refuses_a_certificate_the_ca_did_not_sign() {
    let Some((_db, url)) = tls_database().await else {
        return;
    };
    let untrusted = format!("{url}?sslmode=verify-full&sslrootcert={UNTRUSTED_CA}");
    let Err(e) = PgStore::open(&untrusted, cluster()).await else {
        panic!("a certificate no trusted CA signed was accepted")
    };
    let message = format!("{e}: {:?}", std::error::Error::source(&e));
    eprintln!("verify-full with an untrusted CA: {message}");
    assert!(
        message.contains("UnknownIssuer"),
        "a clear error: {message}"
    );
    let Err(Error::Other(e)) = PgStore::open(
        &format!("{url}?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem"),
        cluster(),
    )
    .await
    else {
        panic!("a missing sslrootcert was accepted")
    };
    assert!(e.to_string().contains("cannot read sslrootcert"), "{e}");
}

#[tokio::test]
async fn verify_full_accepts_the_servers_own_certificate_by_its_name() {
    let Some((_db, url)) = tls_database().await else {
        return;
    };
    let Some(name) = snakeoil_name() else {
        eprintln!("verify-full positive case SKIPPED: cannot read the CN of {SNAKEOIL}");
        return;
    };
    // The same server under the certificate's name, if that name is this machine.
    let parsed = url::Url::parse(&url).expect("url");
    let port = parsed.port().unwrap_or(5432);
    let local = tokio::net::lookup_host((name.as_str(), port))
        .await
        .map(|mut addrs| addrs.any(|a| a.ip().is_loopback()))
        .unwrap_or(false);
    if !local {
        eprintln!("verify-full positive case SKIPPED: {name} does not resolve to this machine");
        return;
    }
    let mut named = parsed.clone();
    named.set_host(Some(&name)).expect("host");
    let named = format!("{named}?sslmode=verify-full&sslrootcert={SNAKEOIL}");
    let (all, encrypted) = open_and_count(&named).await;
    eprintln!("verify-full as {name}: {encrypted} of {all} connections encrypted");
    assert!(
        all >= 2 && encrypted == all,
        "{encrypted} of {all} encrypted"
    );
}

/// The common name of the snakeoil certificate.
fn snakeoil_name() -> Option<String> {
    let der = CertificateDer::from_pem_file(SNAKEOIL).ok()?;
    let cert = x509_cert::Certificate::from_der(der.as_ref()).ok()?;
    let cn = x509_cert::der::oid::db::rfc4519::CN;
    cert.tbs_certificate
        .subject
        .0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .find(|atv| atv.oid == cn)
        .map(|atv| String::from_utf8_lossy(atv.value.value()).into_owned())
}

#[tokio::test]
async fn verify_full_checks_the_host_name_and_verify_ca_does_not() {
    let Some((_db, url)) = tls_database().await else {
        return;
    };
    let parsed = url::Url::parse(&url).expect("url");
    let Some(name) = snakeoil_name() else {
        eprintln!("host name case SKIPPED: cannot read the CN of {SNAKEOIL}");
        return;
    };
    if parsed.host_str() == Some(name.as_str()) {
        eprintln!("host name case SKIPPED: the test server's host is the certificate's name");
        return;
    }
    // The server's own certificate, trusted, but reached by another name than its own.
    let full = format!("{url}?sslmode=verify-full&sslrootcert={SNAKEOIL}");
    let Err(e) = PgStore::open(&full, cluster()).await else {
        panic!("verify-full accepted a certificate for another host name")
    };
    let message = format!("{e}: {:?}", std::error::Error::source(&e));
    assert!(message.contains("NotValidForName"), "{message}");
    let ca = format!("{url}?sslmode=verify-ca&sslrootcert={SNAKEOIL}");
    let (all, encrypted) = open_and_count(&ca).await;
    assert!(
        all >= 2 && encrypted == all,
        "{encrypted} of {all} encrypted"
    );
}
