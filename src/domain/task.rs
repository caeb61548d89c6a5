//! Task identity and state.
//!
//! A task id is a UUIDv7 whose 48-bit prefix is the creation time in milliseconds and whose 12
//! `rand_a` bits are random. Its low 62 bits are the store's sequence number put through a
//! keyed permutation of the 62-bit numbers ([`IdKey`]): an 8-round Feistel network on two
//! 31-bit halves whose round function is SipHash-2-4 under a 128-bit secret drawn once per
//! database (`meta.id_key`), with the task's organization in every round's input. So the
//! stores still find a row by its integer key without a second index (they decode the id with
//! the organization the lookup is for, then compare the whole stored id), while ids are
//! unpredictable, two ids of one tenant tell nothing about how many tasks were created between
//! them (the sequence is shared by every tenant of the database), and the same sequence number
//! gives unrelated bits for different tenants.
//!
//! Databases created before keyed ids have a 62-bit XOR mask (`meta.id_mask`): their ids
//! minted then are `seq ^ mask`. They keep resolving: a lookup tries the keyed decoding first
//! and, on such a database only, the old one (each candidate is checked against the whole
//! stored id and its owner, so a wrong candidate never matches). Every new id of every
//! database uses the keyed permutation.

use uuid::Uuid;

/// The four task states of the public API. `Queued` includes tasks waiting for a retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskStatus {
    Queued,
    Processing,
    Completed,
    Failed,
}

impl TaskStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Queued => "QUEUED",
            TaskStatus::Processing => "PROCESSING",
            TaskStatus::Completed => "COMPLETED",
            TaskStatus::Failed => "FAILED",
        }
    }
    pub(crate) fn code(self) -> i64 {
        match self {
            TaskStatus::Queued => 0,
            TaskStatus::Processing => 1,
            TaskStatus::Completed => 2,
            TaskStatus::Failed => 3,
        }
    }
    pub(crate) fn from_code(c: i64) -> TaskStatus {
        match c {
            0 => TaskStatus::Queued,
            1 => TaskStatus::Processing,
            2 => TaskStatus::Completed,
            _ => TaskStatus::Failed,
        }
    }
    pub(crate) fn is_terminal(self) -> bool {
        matches!(self, TaskStatus::Completed | TaskStatus::Failed)
    }
}

const LOW62: u64 = (1 << 62) - 1;
const HALF_MASK: u64 = (1 << 31) - 1;
/// Feistel rounds of the id permutation (4 already make a strong pseudorandom permutation of a
/// pseudorandom round function; the extra ones cost about 100 ns per id and push the
/// distinguishing bound of these narrow 31-bit halves far beyond any tenant's task count).
const ROUNDS: u64 = 8;

/// The per-database secret task ids are made with (see the module docs).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct IdKey {
    /// The SipHash key of the permutation's rounds.
    key: [u64; 2],
    /// The XOR mask of a database created before keyed ids (`meta.id_mask`): its older ids
    /// are decoded with it when the keyed decoding finds nothing.
    legacy_mask: Option<u64>,
}

impl std::fmt::Debug for IdKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdKey(..)")
    }
}

impl IdKey {
    pub(crate) fn new(key: [u64; 2], legacy_mask: Option<u64>) -> IdKey {
        IdKey { key, legacy_mask }
    }

    /// A new random secret, in its stored form (`meta.id_key`: 32 hex digits).
    pub(crate) fn random_stored() -> String {
        let (a, b) = (rand::random::<u64>(), rand::random::<u64>());
        format!("{a:016x}{b:016x}")
    }

    /// Reads a stored secret ([`random_stored`](Self::random_stored)) and the database's
    /// legacy mask, if it has one (a decimal string, as it was always stored).
    pub(crate) fn from_stored(key: &str, legacy_mask: Option<&str>) -> Option<IdKey> {
        if key.len() != 32 || !key.is_ascii() {
            return None;
        }
        let k0 = u64::from_str_radix(&key[..16], 16).ok()?;
        let k1 = u64::from_str_radix(&key[16..], 16).ok()?;
        let legacy_mask = match legacy_mask {
            Some(m) => Some(m.parse::<u64>().ok()?),
            None => None,
        };
        Some(IdKey::new([k0, k1], legacy_mask))
    }

    /// The id of organization `org`'s task with sequence `seq`, created at `created_ms`.
    pub(crate) fn task_id(&self, org: i64, created_ms: i64, seq: i64, rand12: u16) -> Uuid {
        let ms = (created_ms as u64) & 0xFFFF_FFFF_FFFF;
        let hi = (ms << 16) | (0x7 << 12) | u64::from(rand12 & 0x0FFF);
        let lo = (0b10 << 62) | self.permute(org, (seq as u64) & LOW62);
        Uuid::from_u64_pair(hi, lo)
    }

    /// The sequence number of an id this code minted for `org` ([`task_id`](Self::task_id)).
    /// The caller still checks the whole id against the stored one.
    pub(crate) fn seq_of(&self, org: i64, id: &Uuid) -> i64 {
        let (_, lo) = id.as_u64_pair();
        self.unpermute(org, lo & LOW62) as i64
    }

    /// Every sequence number `id` may stand for as an id of `org`, in the order to look them
    /// up: the keyed decoding, then (on a database created before keyed ids) the legacy one.
    /// The caller takes the candidate whose stored row has exactly this id and owner.
    pub(crate) fn seqs_of(&self, org: i64, id: &Uuid) -> impl Iterator<Item = i64> + use<> {
        let (_, lo) = id.as_u64_pair();
        let keyed = self.seq_of(org, id);
        let legacy = self
            .legacy_mask
            .map(|mask| ((lo & LOW62) ^ (mask & LOW62)) as i64)
            .filter(|&s| s != keyed);
        std::iter::once(keyed).chain(legacy)
    }

    /// The Feistel round function: 31 bits of SipHash-2-4 of (organization, round, half).
    fn round(&self, org: i64, round: u64, half: u64) -> u64 {
        siphash24(self.key, org as u64, (round << 32) | half) & HALF_MASK
    }

    /// The keyed permutation of the 62-bit numbers (`x < 2^62`).
    fn permute(&self, org: i64, x: u64) -> u64 {
        let (mut l, mut r) = ((x >> 31) & HALF_MASK, x & HALF_MASK);
        for i in 0..ROUNDS {
            (l, r) = (r, l ^ self.round(org, i, r));
        }
        (l << 31) | r
    }

    /// The inverse of [`permute`](Self::permute).
    fn unpermute(&self, org: i64, y: u64) -> u64 {
        let (mut l, mut r) = ((y >> 31) & HALF_MASK, y & HALF_MASK);
        for i in (0..ROUNDS).rev() {
            (l, r) = (r ^ self.round(org, i, l), l);
        }
        (l << 31) | r
    }
}

/// SipHash-2-4 (Aumasson and Bernstein, 2012) of the 16-byte message `m0 ‖ m1` (each word
/// little-endian) under `key`: a keyed pseudorandom function, fixed here so that ids minted by
/// one build decode in every other (std's hashers promise no stable output).
fn siphash24(key: [u64; 2], m0: u64, m1: u64) -> u64 {
    let mut v = [
        key[0] ^ 0x736f_6d65_7073_6575,
        key[1] ^ 0x646f_7261_6e64_6f6d,
        key[0] ^ 0x6c79_6765_6e65_7261,
        key[1] ^ 0x7465_6462_7974_6573,
    ];
    fn sip_round(v: &mut [u64; 4]) {
        v[0] = v[0].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(13) ^ v[0];
        v[0] = v[0].rotate_left(32);
        v[2] = v[2].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(16) ^ v[2];
        v[0] = v[0].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(21) ^ v[0];
        v[2] = v[2].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(17) ^ v[2];
        v[2] = v[2].rotate_left(32);
    }
    // The two message words, then the final block: the length (16) in the top byte.
    for m in [m0, m1, 16u64 << 56] {
        v[3] ^= m;
        sip_round(&mut v);
        sip_round(&mut v);
        v[0] ^= m;
    }
    v[2] ^= 0xff;
    for _ in 0..4 {
        sip_round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::HashSet;

    const KEY: IdKey = IdKey {
        key: [0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210],
        legacy_mask: None,
    };

    #[test]
    fn a_task_id_is_a_v7_uuid_that_gives_back_its_sequence() {
        let id = KEY.task_id(7, 1_775_746_800_000, 42, 0xabc);
        assert_eq!(id.get_version_num(), 7);
        assert_eq!(KEY.seq_of(7, &id), 42);
        assert_eq!(KEY.seqs_of(7, &id).collect::<Vec<_>>(), vec![42]);
        assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
        assert_eq!(id.as_u64_pair().0 >> 16, 1_775_746_800_000);
    }

    #[test]
    fn siphash_is_the_reference_siphash_2_4() {
        // The paper's test vector: key 00..0f, message 00..0e (15 bytes) is a129ca6149be45e5;
        // for the 16-byte messages used here, std's (deprecated but frozen) SipHash-2-4 agrees.
        let key = [0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908];
        #[allow(deprecated)]
        let reference = |m0: u64, m1: u64| {
            use std::hash::Hasher;
            let mut h = std::hash::SipHasher::new_with_keys(key[0], key[1]);
            h.write(&m0.to_le_bytes());
            h.write(&m1.to_le_bytes());
            h.finish()
        };
        #[allow(deprecated)]
        let paper = {
            use std::hash::Hasher;
            let mut h = std::hash::SipHasher::new_with_keys(key[0], key[1]);
            h.write(&(0u8..15).collect::<Vec<_>>());
            h.finish()
        };
        assert_eq!(paper, 0xa129_ca61_49be_45e5);
        let m = (0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908);
        for (m0, m1) in [m, (0, 0), (u64::MAX, 1), (42, 7 << 32 | 12345)] {
            assert_eq!(siphash24(key, m0, m1), reference(m0, m1), "{m0:x} {m1:x}");
        }
    }

    #[test]
    fn the_permutation_is_a_bijection_that_round_trips() {
        let mut seen = HashSet::new();
        // Consecutive numbers, both ends of the range, and a spread of others.
        let samples = (0..20_000u64)
            .chain((0..1_000).map(|i| LOW62 - i))
            .chain((0..20_000u64).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15) & LOW62));
        for x in samples {
            let y = KEY.permute(3, x);
            assert!(y <= LOW62, "{x} -> {y} is out of range");
            assert_eq!(KEY.unpermute(3, y), x);
            seen.insert((x, y));
        }
        let images: HashSet<u64> = seen.iter().map(|&(_, y)| y).collect();
        let inputs: HashSet<u64> = seen.iter().map(|&(x, _)| x).collect();
        assert_eq!(images.len(), inputs.len(), "two inputs share an image");
    }

    #[test]
    fn consecutive_ids_of_a_tenant_hide_the_distance_between_them() {
        let lows: Vec<u64> = (1_000..2_000)
            .map(|seq| KEY.task_id(5, 1_775_746_800_000, seq, 0).as_u64_pair().1 & LOW62)
            .collect();
        let xors: HashSet<u64> = lows.windows(2).map(|w| w[0] ^ w[1]).collect();
        let diffs: HashSet<u64> = lows.windows(2).map(|w| w[0].wrapping_sub(w[1])).collect();
        assert!(xors.len() > 990, "only {} distinct XORs", xors.len());
        assert!(
            diffs.len() > 990,
            "only {} distinct differences",
            diffs.len()
        );
        // Every one of the low 62 bits is set in about half the ids, and flips between about
        // half the consecutive pairs (binomial(1000, 1/2): 5 standard deviations is ±79).
        for bit in 0..62 {
            let set = lows.iter().filter(|&&l| l >> bit & 1 == 1).count();
            assert!(
                (421..=579).contains(&set),
                "bit {bit} is set in {set} of 1000"
            );
            let flips = lows
                .windows(2)
                .filter(|w| (w[0] ^ w[1]) >> bit & 1 == 1)
                .count();
            assert!(
                (420..=579).contains(&flips),
                "bit {bit} flips {flips} times"
            );
        }
    }

    #[test]
    fn the_same_sequence_gives_unrelated_ids_to_different_tenants_and_keys() {
        let other = IdKey::new([1, 2], None);
        let mut lows = HashSet::new();
        for org in 1..=500i64 {
            let id = KEY.task_id(org, 0, 77, 0);
            assert_eq!(KEY.seq_of(org, &id), 77);
            lows.insert(id.as_u64_pair().1);
            lows.insert(other.task_id(org, 0, 77, 0).as_u64_pair().1);
        }
        assert_eq!(lows.len(), 1_000);
        // Decoded as another tenant's, an id gives an unrelated sequence number.
        let id = KEY.task_id(1, 0, 77, 0);
        assert_ne!(KEY.seq_of(2, &id), 77);
    }

    #[test]
    fn a_database_with_a_legacy_mask_still_resolves_its_old_ids() {
        let mask = 0x1234_5678_9abc_def0u64 >> 2;
        let ids = IdKey::from_stored("0123456789abcdeffedcba9876543210", Some(&mask.to_string()))
            .expect("stored key");
        assert_eq!(ids.key, KEY.key);
        // An id minted before keyed ids: `seq ^ mask` in the low 62 bits.
        let old = Uuid::from_u64_pair((1 << 16) | (0x7 << 12), (0b10 << 62) | (42 ^ mask));
        let candidates: Vec<i64> = ids.seqs_of(9, &old).collect();
        assert_eq!(candidates.len(), 2);
        assert_eq!(candidates[1], 42);
        // A new id decodes first to its own sequence.
        let new = ids.task_id(9, 1, 42, 0);
        assert_eq!(ids.seqs_of(9, &new).next(), Some(42));
        assert!(IdKey::from_stored("not hex", None).is_none());
        assert!(IdKey::from_stored(&IdKey::random_stored(), None).is_some());
        assert_ne!(IdKey::random_stored(), IdKey::random_stored());
    }

    #[test]
    fn status_codes_round_trip() {
        for s in [
            TaskStatus::Queued,
            TaskStatus::Processing,
            TaskStatus::Completed,
            TaskStatus::Failed,
        ] {
            assert_eq!(TaskStatus::from_code(s.code()), s);
        }
    }
}
