//! Persistent per-device state: device records, folder-hierarchy and collection sync state,
//! and the snapshot of what each device holds.
//!
//! Owns the data model of "what a device knows" and the [`StateStore`] trait behind which it
//! is kept (SQLite in the data directory now; another database later for several nodes). Every
//! method that changes state is one transaction, committed before it returns, so a response
//! is only sent once the state it implies is durable. The algorithms that decide what to put
//! here live in [`crate::sync`]; this module must not talk to the mail store.

pub mod sqlite;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::store::{Flags, FolderId, ModSeq, Uid};

/// A device's row id in the state store.
pub type DevicePk = i64;

/// An ActiveSync collection id (a folder's id as devices see it), stable for the user.
pub type CollectionId = String;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state store error: {0}")]
    Storage(String),
    #[error("corrupt state record: {0}")]
    Corrupt(String),
    #[error("no such device")]
    DeviceNotFound,
}

impl From<crate::sqlite::DbError> for StateError {
    fn from(e: crate::sqlite::DbError) -> Self {
        StateError::Storage(e.to_string())
    }
}

impl From<rusqlite::Error> for StateError {
    fn from(e: rusqlite::Error) -> Self {
        StateError::Storage(e.to_string())
    }
}

pub type StateResult<T> = Result<T, StateError>;

/// Whether a device may sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AccessState {
    #[default]
    Allowed,
    Blocked,
    Quarantined,
}

impl AccessState {
    pub fn as_str(self) -> &'static str {
        match self {
            AccessState::Allowed => "allowed",
            AccessState::Blocked => "blocked",
            AccessState::Quarantined => "quarantined",
        }
    }

    pub fn parse(s: &str) -> Option<AccessState> {
        match s {
            "allowed" => Some(AccessState::Allowed),
            "blocked" => Some(AccessState::Blocked),
            "quarantined" => Some(AccessState::Quarantined),
            _ => None,
        }
    }
}

/// Remote-wipe progress of a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum WipeState {
    #[default]
    None,
    /// Wipe the whole device.
    Requested,
    /// Remove only this account's data (16.1).
    AccountOnlyRequested,
    /// The device confirmed it wiped.
    Acknowledged,
}

/// What the device reported about itself (Settings / Provision DeviceInformation).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub imei: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub friendly_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os_language: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone_number: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mobile_operator: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_outbound_sms: Option<bool>,
}

/// Ping parameters a device sent last, reused by a Ping without a body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PingCache {
    pub heartbeat_secs: u32,
    pub folders: Vec<CollectionId>,
}

/// A device partnership.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Device {
    #[serde(skip)]
    pub pk: DevicePk,
    pub login: String,
    pub device_id: String,
    pub device_type: String,
    pub protocol_version: Option<String>,
    pub info: DeviceInfo,
    pub first_seen: i64,
    pub last_seen: i64,
    pub last_sync: Option<i64>,
    /// The final PolicyKey the device holds (0: not provisioned).
    pub policy_key: u32,
    /// A temporary key handed out in the first Provision step, awaiting acknowledgement.
    #[serde(skip)]
    pub pending_policy_key: u32,
    /// Name of the policy the device was provisioned with, and whether it said it complies.
    pub policy_name: Option<String>,
    pub policy_compliant: Option<bool>,
    pub access: AccessState,
    pub access_reason: Option<String>,
    pub wipe: WipeState,
    pub wipe_requested_at: Option<i64>,
    pub wipe_acknowledged_at: Option<i64>,
    #[serde(skip)]
    pub ping: Option<PingCache>,
}

/// One folder as a device was told about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownFolder {
    pub id: CollectionId,
    pub parent: CollectionId,
    pub name: String,
    pub folder_type: u8,
}

/// FolderSync state: the hierarchy the device holds, and a response it may not have received.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HierarchyState {
    pub key: u32,
    pub folders: Vec<KnownFolder>,
    pub pending: Option<PendingHierarchy>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingHierarchy {
    pub key: u32,
    pub folders: Vec<KnownFolder>,
}

/// What a device holds of one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapItem {
    pub flags: Flags,
    pub keywords: Vec<String>,
    pub date: i64,
}

/// A change to a device's snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapOp {
    Put(Uid, SnapItem),
    Remove(Uid),
}

/// Collection sync state: where the device is, and a response it may not have received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectionState {
    /// Random per bootstrap, so keys from an earlier partnership never match.
    pub epoch: u32,
    /// The SyncKey the device confirmed (by sending it).
    pub key: u32,
    pub folder: FolderId,
    pub uidvalidity: u32,
    pub marks: SyncMarks,
    /// The FilterType the marks were computed for.
    pub filter_type: u8,
    /// The last response, applied to the snapshot when the device sends its key.
    pub pending: Option<PendingSync>,
    /// The device's Options for this collection (protocol-layer JSON), reused when a later
    /// request omits them.
    #[serde(default)]
    pub client_options: Option<String>,
}

/// Progress markers of a collection's sync (see `crate::sync` for their meaning).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SyncMarks {
    /// Every change with MODSEQ ≤ this is reflected in the snapshot.
    pub changed: ModSeq,
    /// Every expunge with MODSEQ ≤ this is reflected in the snapshot.
    pub vanished: ModSeq,
    /// Messages with UID below this have not been offered yet (`None`: all offered).
    pub fill_below: Option<Uid>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingSync {
    pub key: u32,
    pub marks: SyncMarks,
    pub ops: Vec<SnapOp>,
    /// Client Adds already committed under this key: (ClientId, server UID), so a retried
    /// Add is answered with the same ServerId instead of appending twice.
    #[serde(default)]
    pub client_adds: Vec<(String, Uid)>,
}

impl CollectionState {
    /// The key string devices see: `{epoch}N`.
    pub fn key_string(&self, key: u32) -> String {
        format!("{{{:08x}}}{}", self.epoch, key)
    }

    /// Parses a key string of this collection's epoch.
    pub fn parse_key(&self, s: &str) -> Option<u32> {
        let rest = s.strip_prefix(&format!("{{{:08x}}}", self.epoch))?;
        rest.parse().ok()
    }
}

/// The persistent device-state store.
#[async_trait]
pub trait StateStore: Send + Sync + 'static {
    /// The device record, created on first contact; `last_seen` refreshed (at most once a
    /// minute, to keep writes off the hot path).
    async fn touch_device(
        &self,
        login: &str,
        device_id: &str,
        device_type: &str,
        version: &str,
        user_agent: Option<&str>,
    ) -> StateResult<Device>;

    async fn device(&self, login: &str, device_id: &str) -> StateResult<Option<Device>>;

    /// Writes every field of the record (policy, info, access, wipe, ping cache).
    async fn save_device(&self, device: &Device) -> StateResult<()>;

    /// Removes the partnership and all its sync state.
    async fn remove_device(&self, login: &str, device_id: &str) -> StateResult<bool>;

    /// Devices of one user, or of everyone.
    async fn list_devices(&self, login: Option<&str>) -> StateResult<Vec<Device>>;

    /// Collection ids for store folders, assigning new ones as needed (stable per user).
    async fn collection_ids(&self, login: &str, folders: &[FolderId]) -> StateResult<Vec<CollectionId>>;

    /// The store folder behind a collection id, if the user has one with that id.
    async fn folder_for_collection(&self, login: &str, collection: &str) -> StateResult<Option<FolderId>>;

    async fn hierarchy(&self, device: DevicePk) -> StateResult<HierarchyState>;

    async fn save_hierarchy(&self, device: DevicePk, state: &HierarchyState) -> StateResult<()>;

    async fn collection(&self, device: DevicePk, collection: &str) -> StateResult<Option<CollectionState>>;

    /// Every collection the device has sync state for.
    async fn collections(&self, device: DevicePk) -> StateResult<Vec<(CollectionId, CollectionState)>>;

    /// Saves the collection state and applies `ops` to its snapshot, in one transaction.
    /// With `reset`, the snapshot is emptied first.
    async fn save_collection(
        &self,
        device: DevicePk,
        collection: &str,
        state: &CollectionState,
        ops: &[SnapOp],
        reset: bool,
    ) -> StateResult<()>;

    async fn remove_collection(&self, device: DevicePk, collection: &str) -> StateResult<()>;

    /// The snapshot entries of these UIDs.
    async fn snapshot_items(&self, device: DevicePk, collection: &str, uids: &[Uid]) -> StateResult<HashMap<Uid, SnapItem>>;

    /// Up to `limit` snapshot UIDs of messages received before `date`.
    async fn snapshot_older_than(&self, device: DevicePk, collection: &str, date: i64, limit: usize) -> StateResult<Vec<Uid>>;

    /// Number of snapshot entries with UID below `below` received at or after `since`.
    async fn snapshot_count(&self, device: DevicePk, collection: &str, below: Uid, since: i64) -> StateResult<u64>;

    /// Every UID in the snapshot, ascending.
    async fn snapshot_uids(&self, device: DevicePk, collection: &str) -> StateResult<Vec<Uid>>;

    /// A per-user setting (JSON), e.g. out-of-office.
    async fn user_setting(&self, login: &str, name: &str) -> StateResult<Option<String>>;

    async fn set_user_setting(&self, login: &str, name: &str, value: &str) -> StateResult<()>;

    /// Stores the last full Sync request of a device, for empty Sync requests.
    async fn save_sync_request(&self, device: DevicePk, request: &[u8]) -> StateResult<()>;

    async fn sync_request(&self, device: DevicePk) -> StateResult<Option<Vec<u8>>>;
}

pub type SharedState = Arc<dyn StateStore>;
