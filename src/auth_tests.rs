//! The bounds on unknown keys: a flood of random well-formed keys reaches the directory a
//! bounded number of times, valid keys keep working, and a key created after a miss works
//! once the negative cache forgets the miss.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;

use super::*;
use crate::store::{CreatedOrg, EngineHealthRow, KeyRecord, Org, OrgSpec, Result};

/// A directory that knows the keys in `keys` and counts its lookups.
#[derive(Default)]
struct Counting {
    keys: Mutex<Vec<ApiKey>>,
    lookups: AtomicUsize,
}

impl Counting {
    fn add(&self) -> ApiKey {
        let key = ApiKey::generate();
        lock(&self.keys).push(key.clone());
        key
    }
    fn lookups(&self) -> usize {
        self.lookups.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Directory for Counting {
    async fn find_key(&self, digest: [u8; 32]) -> Result<Option<KeyRecord>> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        Ok(lock(&self.keys)
            .iter()
            .any(|k| k.digest() == digest)
            .then(|| KeyRecord {
                key_id: "key_1".into(),
                org: 1,
                digest: digest.to_vec(),
                revoked: false,
                rate_limit: None,
            }))
    }
    async fn org(&self, _: OrgKey) -> Result<Org> {
        unreachable!("not used by authentication")
    }
    async fn webhook_secret(&self, _: OrgKey) -> Result<Option<String>> {
        unreachable!("not used by authentication")
    }
    async fn create_org(&self, _: &OrgSpec) -> Result<CreatedOrg> {
        unreachable!("not used by authentication")
    }
    async fn create_key(&self, _: &str) -> Result<(String, ApiKey)> {
        unreachable!("not used by authentication")
    }
    async fn revoke_key(&self, _: &str) -> Result<()> {
        unreachable!("not used by authentication")
    }
    async fn set_webhook_secret(&self, _: &str, _: Option<&str>) -> Result<()> {
        unreachable!("not used by authentication")
    }
    async fn count_orgs(&self) -> Result<i64> {
        unreachable!("not used by authentication")
    }
    async fn record_engine_health(
        &self,
        _: &str,
        _: &str,
        _: Option<&str>,
        _: i64,
        _: i64,
    ) -> Result<()> {
        unreachable!("not used by authentication")
    }
    async fn engine_health(&self) -> Result<Vec<EngineHealthRow>> {
        unreachable!("not used by authentication")
    }
    async fn list_orgs(&self) -> Result<Vec<crate::store::OrgInfo>> {
        unreachable!("not used by authentication")
    }
    async fn org_info(&self, _: &str) -> Result<crate::store::OrgInfo> {
        unreachable!("not used by authentication")
    }
    async fn update_org(
        &self,
        _: &str,
        _: &crate::store::OrgUpdate,
    ) -> Result<crate::store::OrgInfo> {
        unreachable!("not used by authentication")
    }
    async fn list_keys(&self, _: &str) -> Result<Vec<crate::store::KeyInfo>> {
        unreachable!("not used by authentication")
    }
    async fn queues(&self) -> Result<Vec<crate::store::OrgQueue>> {
        unreachable!("not used by authentication")
    }
    async fn task_of_org(
        &self,
        _: &str,
        _: uuid::Uuid,
    ) -> Result<Option<crate::store::TaskRecord>> {
        unreachable!("not used by authentication")
    }
}

fn bearer(key: &ApiKey) -> String {
    format!("Bearer {}", key.expose())
}

async fn code(
    auth: &Authenticator,
    dir: &Counting,
    key: &ApiKey,
    peer: Option<IpAddr>,
) -> Option<&'static str> {
    auth.authenticate(dir, Some(&bearer(key)), peer)
        .await
        .err()
        .map(|e| e.code)
}

const PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7));

#[tokio::test]
async fn a_flood_of_random_keys_from_one_address_reaches_the_directory_a_bounded_number_of_times() {
    let dir = Counting::default();
    let auth = Authenticator::default();
    let valid = dir.add();
    assert_eq!(code(&auth, &dir, &valid, Some(PEER)).await, None);
    let before = dir.lookups();
    let mut refused = 0;
    for _ in 0..1_000 {
        let random = ApiKey::generate();
        match code(&auth, &dir, &random, Some(PEER)).await {
            Some("INVALID_OR_EXPIRED_API_KEY") => {}
            Some("RATE_LIMIT_EXCEEDED") => refused += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    let flood = dir.lookups() - before;
    assert!(
        flood <= FAILED_PER_ADDRESS as usize,
        "{flood} lookups for 1,000 random keys within a second"
    );
    assert!(refused >= 1_000 - FAILED_PER_ADDRESS as usize);
    // The valid key (cached) keeps working from the same address.
    assert_eq!(code(&auth, &dir, &valid, Some(PEER)).await, None);
}

#[tokio::test]
async fn an_ipv6_client_counts_as_its_slash_64() {
    let dir = Counting::default();
    let auth = Authenticator::default();
    for i in 0..100u16 {
        let peer = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, i, i, i, i));
        let _ = code(&auth, &dir, &ApiKey::generate(), Some(peer)).await;
    }
    assert_eq!(dir.lookups(), FAILED_PER_ADDRESS as usize);
}

#[tokio::test]
async fn a_repeated_unknown_key_is_looked_up_once_from_any_number_of_addresses() {
    let dir = Counting::default();
    let auth = Authenticator::default();
    let unknown = ApiKey::generate();
    for i in 0..200u8 {
        let peer = IpAddr::V4(Ipv4Addr::new(198, 51, 100, i));
        assert_eq!(
            code(&auth, &dir, &unknown, Some(peer)).await,
            Some("INVALID_OR_EXPIRED_API_KEY")
        );
    }
    assert_eq!(dir.lookups(), 1);
}

#[tokio::test]
async fn a_key_created_after_a_miss_works_once_the_negative_cache_forgets_it() {
    let dir = Counting::default();
    let ttl = Duration::from_millis(200);
    let auth = Authenticator::new(ttl);
    let key = ApiKey::generate();
    assert_eq!(
        code(&auth, &dir, &key, Some(PEER)).await,
        Some("INVALID_OR_EXPIRED_API_KEY")
    );
    lock(&dir.keys).push(key.clone());
    // Within the delay the miss is remembered (no lookup)...
    assert_eq!(
        code(&auth, &dir, &key, Some(PEER)).await,
        Some("INVALID_OR_EXPIRED_API_KEY")
    );
    assert_eq!(dir.lookups(), 1);
    // ...after it, the new key works.
    tokio::time::sleep(ttl + Duration::from_millis(50)).await;
    assert_eq!(code(&auth, &dir, &key, Some(PEER)).await, None);
}

#[test]
fn the_documented_delay_is_five_seconds() {
    assert_eq!(NEGATIVE_TTL, Duration::from_secs(5));
}
