//! The public plans (reference §6): credits per cycle and concurrency.

/// One plan row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) name: &'static str,
    pub(crate) credits: i64,
    pub(crate) concurrency: u32,
}

pub(crate) const PLANS: &[Plan] = &[
    Plan {
        name: "free",
        credits: 500,
        concurrency: 1,
    },
    Plan {
        name: "lite",
        credits: 37_500,
        concurrency: 10,
    },
    Plan {
        name: "hobby",
        credits: 250_000,
        concurrency: 20,
    },
    Plan {
        name: "starter",
        credits: 650_000,
        concurrency: 50,
    },
    Plan {
        name: "growth",
        credits: 1_350_000,
        concurrency: 75,
    },
    Plan {
        name: "business",
        credits: 2_800_000,
        concurrency: 100,
    },
    Plan {
        name: "enterprise-2k",
        credits: 5_871_025,
        concurrency: 135,
    },
    Plan {
        name: "enterprise-3k",
        credits: 9_306_606,
        concurrency: 175,
    },
    Plan {
        name: "enterprise-4k",
        credits: 12_756_261,
        concurrency: 215,
    },
    Plan {
        name: "enterprise-5k",
        credits: 16_391_783,
        concurrency: 255,
    },
];

/// Queue limit of every plan (reference §2).
pub(crate) const DEFAULT_QUEUE_LIMIT: i64 = 100_000;

pub(crate) fn plan(name: &str) -> Option<Plan> {
    PLANS.iter().copied().find(|p| p.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_plan_of_the_reference_is_known() {
        assert_eq!(
            plan("free").map(|p| (p.credits, p.concurrency)),
            Some((500, 1))
        );
        assert_eq!(plan("enterprise-5k").map(|p| p.concurrency), Some(255));
        assert_eq!(plan("platinum"), None);
    }
}
