//! API-key authentication (SPEC §3.9): `Authorization: Bearer sk_live_<32 hex>`.
//!
//! Keys are looked up by SHA-256 digest and the stored digest is compared in constant time.
//! Known keys are cached for [`CACHE_TTL`] (a revoked key may work that long, as the public
//! API documents up to a minute); unknown keys are never cached, so a key made by
//! `cloro key create` works at once on a running server.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::api::error::ApiError;
use crate::domain::apikey::{ApiKey, constant_time_eq};
use crate::store::{OrgKey, Store};

pub(crate) const CACHE_TTL: Duration = Duration::from_secs(10);
const CACHE_MAX: usize = 100_000;

/// The authenticated caller.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub(crate) org: OrgKey,
    pub(crate) key_id: String,
    /// The organization's own rate limit (requests/s per key per endpoint), if it set one.
    pub(crate) rate_limit: Option<u32>,
}

#[derive(Default)]
pub(crate) struct Authenticator {
    cache: Mutex<HashMap<[u8; 32], (Caller, Instant)>>,
}

impl Authenticator {
    /// Resolves the `Authorization` header value to a caller, or the right 401.
    pub(crate) async fn authenticate(
        &self,
        store: &dyn Store,
        header: Option<&str>,
    ) -> Result<Caller, ApiError> {
        let token = header
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ApiError::new("MISSING_API_KEY"))?;
        let key = ApiKey::parse(token).ok_or_else(|| ApiError::new("INVALID_API_KEY_FORMAT"))?;
        let digest = key.digest();
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&digest)
            .filter(|(_, at)| at.elapsed() < CACHE_TTL)
            .map(|(caller, _)| caller.clone());
        if let Some(caller) = cached {
            return Ok(caller);
        }
        let record = store.find_key(digest).await?;
        let record = record
            .filter(|r| !r.revoked && constant_time_eq(&r.digest, &digest))
            .ok_or_else(|| ApiError::new("INVALID_OR_EXPIRED_API_KEY"))?;
        let caller = Caller {
            org: record.org,
            key_id: record.key_id,
            rate_limit: record.rate_limit,
        };
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_MAX {
            cache.retain(|_, (_, at)| at.elapsed() < CACHE_TTL);
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(digest, (caller.clone(), Instant::now()));
        Ok(caller)
    }
}
