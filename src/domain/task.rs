//! Task identity and state.
//!
//! A task id is a UUIDv7 whose 48-bit prefix is the creation time in milliseconds. Its low 62
//! bits carry the store's sequence number XOR a per-database mask, so the embedded store finds
//! a row by its integer key without a second index, and ids reveal nothing about volume.

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
    #[cfg(test)]
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

/// Builds the id of the task with sequence `seq`, created at `created_ms`.
pub(crate) fn task_id(created_ms: i64, seq: i64, mask: u64, rand12: u16) -> Uuid {
    let ms = (created_ms as u64) & 0xFFFF_FFFF_FFFF;
    let hi = (ms << 16) | (0x7 << 12) | u64::from(rand12 & 0x0FFF);
    let lo = (0b10 << 62) | (((seq as u64) ^ mask) & LOW62);
    Uuid::from_u64_pair(hi, lo)
}

/// Recovers the sequence number from an id made by [`task_id`] (the caller still checks the
/// whole id against the stored one).
pub(crate) fn seq_of(id: &Uuid, mask: u64) -> i64 {
    let (_, lo) = id.as_u64_pair();
    ((lo & LOW62) ^ (mask & LOW62)) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_id_is_a_v7_uuid_that_gives_back_its_sequence() {
        let mask = 0x1234_5678_9abc_def0;
        let id = task_id(1_775_746_800_000, 42, mask, 0xabc);
        assert_eq!(id.get_version_num(), 7);
        assert_eq!(seq_of(&id, mask), 42);
        assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
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
