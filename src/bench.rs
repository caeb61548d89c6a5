//! `cloro bench`: measures the queue through its HTTP API (see docs/PERFORMANCE.md).

use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Tasks to enqueue.
    #[arg(long, default_value_t = 100_000)]
    pub tasks: usize,
}

pub fn run(_args: BenchArgs) -> anyhow::Result<()> {
    anyhow::bail!("bench: not implemented yet")
}
