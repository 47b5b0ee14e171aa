//! The per-call resource limiter: a store's memories and tables grow only within the call's
//! limits, and a refused (or failed) growth traps the call with a typed [`LimitExceeded`], so
//! the caller tells a plugin that asked for too much from every other failure by type, never
//! by message. It holds no state beyond the limits of one call.

use wasmtime::{ResourceLimiter, StoreLimits};

/// A growth the call's limits refused, or one the host failed to make; the call traps with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LimitExceeded {
    #[error("growing memory to {0} bytes exceeds the plugin's limit")]
    Memory(usize),
    #[error("growing a table to {0} elements exceeds the plugin's limit")]
    Table(usize),
    #[error("the host could not grow the plugin's memory")]
    MemoryGrowFailed,
    #[error("the host could not grow a table of the plugin")]
    TableGrowFailed,
}

/// [`StoreLimits`] (sizes and counts), with refusals and failures as [`LimitExceeded`] traps.
pub(crate) struct Limiter(StoreLimits);

impl Limiter {
    /// `limits` must not trap on its own (`trap_on_grow_failure(false)`): it answers whether
    /// a growth fits, and this limiter turns a refusal into the trap.
    pub(crate) fn new(limits: StoreLimits) -> Limiter {
        Limiter(limits)
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if self.0.memory_growing(current, desired, maximum)? {
            Ok(true)
        } else {
            Err(LimitExceeded::Memory(desired).into())
        }
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        Err(error.context(LimitExceeded::MemoryGrowFailed))
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if self.0.table_growing(current, desired, maximum)? {
            Ok(true)
        } else {
            Err(LimitExceeded::Table(desired).into())
        }
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        Err(error.context(LimitExceeded::TableGrowFailed))
    }

    fn instances(&self) -> usize {
        self.0.instances()
    }

    fn tables(&self) -> usize {
        self.0.tables()
    }

    fn memories(&self) -> usize {
        self.0.memories()
    }
}
