//! Async locks by key, created on demand and dropped when nobody holds or waits for them:
//! per-device serialisation in the sync engine, one password check per user at a time.

use std::hash::Hash;
use std::sync::Arc;

use dashmap::DashMap;

pub struct KeyedLocks<K: Hash + Eq + Clone> {
    locks: DashMap<K, Arc<tokio::sync::Mutex<()>>>,
}

impl<K: Hash + Eq + Clone> Default for KeyedLocks<K> {
    fn default() -> Self {
        KeyedLocks { locks: DashMap::new() }
    }
}

/// Holds the lock of one key; dropping it releases the lock and removes the entry when
/// nobody else holds or waits for it.
pub struct KeyGuard<'a, K: Hash + Eq + Clone> {
    locks: &'a KeyedLocks<K>,
    key: K,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl<K: Hash + Eq + Clone> Drop for KeyGuard<'_, K> {
    fn drop(&mut self) {
        self.guard.take();
        self.locks.locks.remove_if(&self.key, |_, m| Arc::strong_count(m) == 1);
    }
}

impl<K: Hash + Eq + Clone> KeyedLocks<K> {
    pub async fn lock(&self, key: K) -> KeyGuard<'_, K> {
        let mutex = self.locks.entry(key.clone()).or_default().clone();
        let guard = mutex.lock_owned().await;
        KeyGuard { locks: self, key, guard: Some(guard) }
    }

    /// Keys with a live lock.
    pub fn len(&self) -> usize {
        self.locks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.locks.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serialises_per_key_and_cleans_up() {
        let locks: Arc<KeyedLocks<u32>> = Arc::new(KeyedLocks::default());
        let first = locks.lock(1).await;
        let other = locks.lock(2).await;
        assert_eq!(locks.len(), 2);
        let l2 = locks.clone();
        let waiter = tokio::spawn(async move {
            let _g = l2.lock(1).await;
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "the same key waits");
        drop(first);
        waiter.await.unwrap();
        drop(other);
        assert!(locks.is_empty());
    }
}
