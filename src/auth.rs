//! API-key authentication (SPEC §3.9): `Authorization: Bearer sk_live_<32 hex>`.
//!
//! Keys are looked up by SHA-256 digest and the stored digest is compared in constant time.
//! Known keys are cached for [`CACHE_TTL`] (a revoked key may work that long, as the public
//! API documents up to a minute).
//!
//! Unknown keys cost a store lookup each, and the per-key rate limit only applies after
//! authentication, so a flood of random well-formed keys would otherwise reach the store once
//! per request (in cluster mode enough to drain the connection pool, and every tenant would get
//! 503s). Two bounds sit before the lookup:
//! * a **negative cache**: a digest the store did not know is answered from memory for
//!   [`NEGATIVE_TTL`] (at most [`NEGATIVE_MAX`] digests). A key made by `cloro key create`
//!   after a request tried it therefore works within [`NEGATIVE_TTL`] (at once if no request
//!   tried it before);
//! * a **per-address budget of failed lookups**: an address (an IPv6 address by its /64) whose
//!   lookups found nothing [`FAILED_PER_ADDRESS`] times in the current second gets 429
//!   `RATE_LIMIT_EXCEEDED` for keys that are not cached, without a lookup, until the second
//!   ends. Cached keys from that address keep working, so a tenant behind the same address
//!   loses nothing it already used.
//!
//! Both maps are bounded and swept, like the rate limiter's.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::api::error::ApiError;
use crate::domain::apikey::{ApiKey, constant_time_eq};
use crate::store::{Directory, OrgKey};

pub(crate) const CACHE_TTL: Duration = Duration::from_secs(10);
const CACHE_MAX: usize = 100_000;
/// How long a digest the store did not know is refused from memory: the longest a key created
/// after a request tried it waits before it works.
pub(crate) const NEGATIVE_TTL: Duration = Duration::from_secs(5);
/// Most unknown digests remembered at once.
pub(crate) const NEGATIVE_MAX: usize = 65_536;
/// Failed lookups an address may cause per one-second window.
pub(crate) const FAILED_PER_ADDRESS: u32 = 20;
/// The window of [`FAILED_PER_ADDRESS`].
const FAILED_WINDOW: Duration = Duration::from_secs(1);
/// Most addresses whose failures are counted at once.
const ADDRESSES_MAX: usize = 65_536;

/// The authenticated caller.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub(crate) org: OrgKey,
    pub(crate) key_id: String,
    /// The organization's own rate limit (requests/s per key per endpoint), if it set one.
    pub(crate) rate_limit: Option<u32>,
}

pub(crate) struct Authenticator {
    cache: Mutex<HashMap<[u8; 32], (Caller, Instant)>>,
    /// Digests the store did not know, and when it said so.
    unknown: Mutex<HashMap<[u8; 32], Instant>>,
    /// Per address (IPv6: its /64): the window's start and the failed lookups in it.
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
    negative_ttl: Duration,
}

impl Default for Authenticator {
    fn default() -> Self {
        Authenticator::new(NEGATIVE_TTL)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The address failures are counted under: an IPv6 client can use its whole /64, so it counts
/// as one. The listener counts connections per address the same way.
pub(crate) fn address_bucket(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Inserts into a bounded map: when full, drops what `live` says is stale, then everything.
fn insert_bounded<K: std::hash::Hash + Eq, V>(
    map: &mut HashMap<K, V>,
    max: usize,
    key: K,
    value: V,
    live: impl Fn(&V) -> bool,
) {
    if map.len() >= max && !map.contains_key(&key) {
        map.retain(|_, v| live(v));
        if map.len() >= max {
            map.clear();
        }
    }
    map.insert(key, value);
}

impl Authenticator {
    /// An authenticator whose negative cache keeps unknown digests for `negative_ttl`.
    pub(crate) fn new(negative_ttl: Duration) -> Authenticator {
        Authenticator {
            cache: Mutex::default(),
            unknown: Mutex::default(),
            failures: Mutex::default(),
            negative_ttl,
        }
    }

    /// Resolves the `Authorization` header value of a request from `peer` to a caller, or the
    /// right 401 (or 429 for an address over its failed-lookup budget, see the module docs).
    pub(crate) async fn authenticate(
        &self,
        dir: &dyn Directory,
        header: Option<&str>,
        peer: Option<IpAddr>,
    ) -> Result<Caller, ApiError> {
        let token = header
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ApiError::new("MISSING_API_KEY"))?;
        let key = ApiKey::parse(token).ok_or_else(|| ApiError::new("INVALID_API_KEY_FORMAT"))?;
        let digest = key.digest();
        let cached = lock(&self.cache)
            .get(&digest)
            .filter(|(_, at)| at.elapsed() < CACHE_TTL)
            .map(|(caller, _)| caller.clone());
        if let Some(caller) = cached {
            return Ok(caller);
        }
        let known_unknown = lock(&self.unknown)
            .get(&digest)
            .is_some_and(|at| at.elapsed() < self.negative_ttl);
        if known_unknown {
            return Err(ApiError::new("INVALID_OR_EXPIRED_API_KEY"));
        }
        let peer = peer.map(address_bucket);
        if let Some(peer) = peer
            && lock(&self.failures)
                .get(&peer)
                .is_some_and(|(at, n)| at.elapsed() < FAILED_WINDOW && *n >= FAILED_PER_ADDRESS)
        {
            tracing::info!(%peer, "Too many unknown API keys from one address");
            let mut e = ApiError::new("RATE_LIMIT_EXCEEDED");
            e.retry_after = Some(1);
            return Err(e);
        }
        let record = dir
            .find_key(digest)
            .await?
            .filter(|r| !r.revoked && constant_time_eq(&r.digest, &digest));
        let Some(record) = record else {
            self.failed(digest, peer);
            return Err(ApiError::new("INVALID_OR_EXPIRED_API_KEY"));
        };
        let caller = Caller {
            org: record.org,
            key_id: record.key_id,
            rate_limit: record.rate_limit,
        };
        insert_bounded(
            &mut lock(&self.cache),
            CACHE_MAX,
            digest,
            (caller.clone(), Instant::now()),
            |(_, at)| at.elapsed() < CACHE_TTL,
        );
        Ok(caller)
    }

    /// Remembers a lookup that found nothing (a revoked key included): the digest in the
    /// negative cache, one more failure for the address.
    fn failed(&self, digest: [u8; 32], peer: Option<IpAddr>) {
        let ttl = self.negative_ttl;
        insert_bounded(
            &mut lock(&self.unknown),
            NEGATIVE_MAX,
            digest,
            Instant::now(),
            |at| at.elapsed() < ttl,
        );
        let Some(peer) = peer else { return };
        let mut failures = lock(&self.failures);
        let now = Instant::now();
        let counted = match failures.get_mut(&peer) {
            Some((at, n)) if at.elapsed() < FAILED_WINDOW => {
                *n = n.saturating_add(1);
                true
            }
            Some(entry) => {
                *entry = (now, 1);
                true
            }
            None => false,
        };
        if !counted {
            insert_bounded(&mut failures, ADDRESSES_MAX, peer, (now, 1), |(at, _)| {
                at.elapsed() < FAILED_WINDOW
            });
        }
    }
}

#[cfg(test)]
#[path = "auth_tests.rs"]
mod tests;
