//! Concurrency lanes: keyed semaphores, so at most `capacity` operations with
//! the same key (one guest, one node's creates) run at once. Lanes are taken
//! in sorted key order, so two operations can never wait on each other.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::providers::Lane;

#[derive(Default)]
pub struct Lanes {
    sems: Mutex<BTreeMap<String, Arc<Semaphore>>>,
}

/// Held lanes; released on drop.
pub struct Held(#[allow(dead_code)] Vec<OwnedSemaphorePermit>);

impl Lanes {
    pub async fn acquire(&self, mut lanes: Vec<Lane>) -> Held {
        lanes.sort();
        lanes.dedup_by(|a, b| a.key == b.key);
        let mut permits = Vec::with_capacity(lanes.len());
        for lane in lanes {
            let sem = {
                let mut map = match self.sems.lock() {
                    Ok(m) => m,
                    Err(p) => p.into_inner(),
                };
                map.entry(lane.key.clone())
                    .or_insert_with(|| Arc::new(Semaphore::new(lane.capacity.max(1))))
                    .clone()
            };
            // The semaphore is never closed, so acquiring cannot fail.
            if let Ok(p) = sem.acquire_owned().await {
                permits.push(p);
            }
        }
        Held(permits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn one_at_a_time_per_key() {
        let lanes = Arc::new(Lanes::default());
        let now = Arc::new(AtomicUsize::new(0));
        let max = Arc::new(AtomicUsize::new(0));
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let (lanes, now, max) = (lanes.clone(), now.clone(), max.clone());
            set.spawn(async move {
                let _h = lanes
                    .acquire(vec![Lane {
                        key: "guest:1".into(),
                        capacity: 1,
                    }])
                    .await;
                let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                max.fetch_max(n, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
                now.fetch_sub(1, Ordering::SeqCst);
            });
        }
        while set.join_next().await.is_some() {}
        assert_eq!(max.load(Ordering::SeqCst), 1);
    }
}
