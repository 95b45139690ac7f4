//! The sync engine: what each device holds, what it must be sent next, and how a device's
//! own changes are applied.
//!
//! Owns the algorithms (SyncKey rotation and retry, windowing, FilterType windows, applying
//! client changes, computing deltas, folder-hierarchy deltas) over the [`crate::store`] and
//! [`crate::state`] traits. It knows nothing of WBXML: [`crate::eas`] turns requests into
//! calls here and results into responses. Work for one device is serialised by a per-device
//! lock so a retry racing its original cannot interleave with it.

pub mod collection;
pub mod hierarchy;

use std::sync::Arc;

pub use collection::{ClientOp, ClientOpResult, CollectionSync, CollectionSyncRequest, DeltaOptions, ServerChange};
pub use hierarchy::HierarchyDelta;

use crate::locks::{KeyGuard, KeyedLocks};
use crate::state::{DevicePk, StateError, StateStore};
use crate::store::{Mailbox, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("invalid or stale sync key")]
    InvalidSyncKey,
    #[error("the folder does not exist")]
    FolderNotFound,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    State(#[from] StateError),
}

/// The FilterType of a Sync (MS-ASCMD 2.2.3.68.2): how far back mail is synced.
pub fn filter_cutoff(filter_type: u8, now: i64) -> Option<i64> {
    const DAY: i64 = 86_400;
    let days = match filter_type {
        1 => 1,
        2 => 3,
        3 => 7,
        4 => 14,
        5 => 31,
        6 => 93,
        7 => 186,
        _ => return None, // 0: all items (and the calendar-only 8 means nothing for mail)
    };
    Some(now - days * DAY)
}

/// The engine's entry points.
pub struct SyncEngine {
    state: Arc<dyn StateStore>,
    locks: KeyedLocks<DevicePk>,
}

/// Holds a device's lock.
pub type DeviceGuard<'a> = KeyGuard<'a, DevicePk>;

impl SyncEngine {
    pub fn new(state: Arc<dyn StateStore>) -> Self {
        SyncEngine { state, locks: KeyedLocks::default() }
    }

    pub fn state(&self) -> &dyn StateStore {
        self.state.as_ref()
    }

    /// Serialises work on one device.
    pub async fn lock_device(&self, device: DevicePk) -> DeviceGuard<'_> {
        self.locks.lock(device).await
    }

    /// Starts a collection sync (the caller holds the device lock until it commits).
    pub async fn begin_collection(&self, mailbox: &dyn Mailbox, request: CollectionSyncRequest<'_>) -> Result<CollectionSync, SyncError> {
        collection::begin(mailbox, self.state.as_ref(), request).await
    }

    /// GetItemEstimate: `None` when the collection was never synced.
    pub async fn estimate(
        &self,
        mailbox: &dyn Mailbox,
        device: DevicePk,
        collection: &str,
        opts: &DeltaOptions,
    ) -> Result<Option<u64>, SyncError> {
        collection::estimate(mailbox, self.state.as_ref(), device, collection, opts).await
    }

    /// Records that the device itself moved a message (MoveItems), so the move is not echoed
    /// back as a Delete in the source and an Add in the destination.
    pub async fn note_moved(
        &self,
        device: DevicePk,
        from: (&str, crate::store::Uid),
        to: Option<(&str, &crate::store::MessageState)>,
    ) -> Result<(), SyncError> {
        collection::note_moved(self.state.as_ref(), device, from, to).await
    }

    /// Ping's question: is there anything the device has not synced in this collection?
    pub async fn has_changes(
        &self,
        mailbox: &dyn Mailbox,
        device: DevicePk,
        collection: &str,
        opts: &DeltaOptions,
    ) -> Result<bool, SyncError> {
        collection::has_changes(mailbox, self.state.as_ref(), device, collection, opts).await
    }
}

#[cfg(test)]
mod tests;
