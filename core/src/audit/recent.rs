//! Which tenants this instance wrote audit entries for recently, and their databases: the
//! sealer (and the search indexer and plugin delivery) visit them first each round.
//!
//! Part of the instance's state, never process-global (a database handle belongs to its
//! instance). Knows nothing of tenancy beyond a tenant's id and database handle.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use uuid::Uuid;

use crate::db::TenantDb;

/// Tenants one instance wrote entries for recently: its sealer visits them every round. Part
/// of the instance's state, built by `app`.
#[derive(Debug, Default)]
pub struct Recent(Mutex<HashMap<Uuid, (Instant, TenantDb)>>);

impl Recent {
    pub(crate) fn mark(&self, id: Uuid, db: &TenantDb) {
        let mut recent = self.0.lock().expect("audit recent lock");
        match recent.get_mut(&id) {
            Some(entry) => entry.0 = Instant::now(),
            None => {
                recent.insert(id, (Instant::now(), db.clone()));
            }
        }
    }

    /// Stops visiting `tenant` until it is written to again (it was deleted, or sealing
    /// failed and the periodic sweep will retry it).
    pub fn forget(&self, tenant: Uuid) {
        self.0.lock().expect("audit recent lock").remove(&tenant);
    }

    /// The tenants written to within `window` (entries older than an hour are forgotten).
    pub fn tenants(&self, window: std::time::Duration) -> Vec<(Uuid, TenantDb)> {
        let mut recent = self.0.lock().expect("audit recent lock");
        recent.retain(|_, (at, _)| at.elapsed() < std::time::Duration::from_secs(3600));
        recent
            .iter()
            .filter(|(_, (at, _))| at.elapsed() < window)
            .map(|(id, (_, db))| (*id, db.clone()))
            .collect()
    }
}
