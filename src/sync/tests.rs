//! Engine tests against the embedded store and the SQLite state store, with a simulated
//! device that applies responses the way a phone does.

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::state::sqlite::SqliteState;
use crate::store::embedded::{EmbeddedSettings, EmbeddedStore, NewUser};
use crate::store::{Account, FlagChange, Flags, FolderId, MailStore, Origin, Uid};

struct Fixture {
    _dir: tempfile::TempDir,
    store: EmbeddedStore,
    engine: SyncEngine,
    account: Account,
    inbox: FolderId,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path(), EmbeddedSettings::default()).unwrap();
    store
        .add_user(NewUser { login: "alice".into(), email: Some("alice@example.test".into()), display_name: None, password: "pw".into() })
        .await
        .unwrap();
    let account = store.find_account("alice").await.unwrap().unwrap();
    let state = Arc::new(SqliteState::open(dir.path()).unwrap());
    let engine = SyncEngine::new(state);
    let mb = store.mailbox(&account, Origin::Server).await.unwrap();
    let inbox = mb.folders().await.unwrap().into_iter().find(|f| f.role == Some(crate::store::SpecialUse::Inbox)).unwrap().id;
    Fixture { _dir: dir, store, engine, account, inbox }
}

fn message(n: usize) -> Vec<u8> {
    format!("From: bob@example.test\r\nTo: alice@example.test\r\nSubject: message {n}\r\n\r\nbody {n}\r\n").into_bytes()
}

/// A simulated phone: what it holds (UID → flags) and its SyncKey.
#[derive(Debug, Clone, Default)]
struct Phone {
    pk: DevicePk,
    key: String,
    held: BTreeMap<Uid, Flags>,
}

impl Phone {
    fn apply(&mut self, changes: &[ServerChange]) {
        for c in changes {
            match c {
                ServerChange::Add(m) => {
                    assert!(self.held.insert(m.uid, m.flags).is_none(), "uid {} added twice", m.uid);
                }
                ServerChange::Change(m) => {
                    assert!(self.held.insert(m.uid, m.flags).is_some(), "change for unknown uid {}", m.uid);
                }
                ServerChange::Delete(u) | ServerChange::SoftDelete(u) => {
                    self.held.remove(u);
                }
            }
        }
    }
}

const ALL: DeltaOptions = DeltaOptions { window: 512, cutoff: None, filter_type: 0 };

impl Fixture {
    async fn mailbox(&self, origin: Origin) -> Arc<dyn Mailbox> {
        self.store.mailbox(&self.account, origin).await.unwrap()
    }

    async fn phone(&self, id: &str) -> Phone {
        let dev = self.engine.state().touch_device("alice", id, "test", "16.1", None).await.unwrap();
        let mb = self.mailbox(Origin::Server).await;
        let s = self
            .engine
            .begin_collection(
                mb.as_ref(),
                CollectionSyncRequest {
                    device: dev.pk,
                    collection: "1",
                    folder: &self.inbox,
                    sync_key: "0",
                    options: ALL,
                    get_changes: false,
                    client_ops: vec![],
                    client_options: None,
                },
            )
            .await
            .unwrap();
        let key = s.commit(self.engine.state()).await.unwrap();
        Phone { pk: dev.pk, key, held: BTreeMap::new() }
    }

    /// One Sync round: returns the changes, applies them unless `lose_response`.
    async fn sync(&self, phone: &mut Phone, opts: DeltaOptions, ops: Vec<ClientOp>, lose_response: bool) -> (Vec<ServerChange>, bool) {
        let mb = self.mailbox(Origin::Device(format!("dev{}", phone.pk).into())).await;
        let s = self
            .engine
            .begin_collection(
                mb.as_ref(),
                CollectionSyncRequest {
                    device: phone.pk,
                    collection: "1",
                    folder: &self.inbox,
                    sync_key: &phone.key,
                    options: opts,
                    get_changes: true,
                    client_ops: ops,
                    client_options: None,
                },
            )
            .await
            .unwrap();
        let (changes, more) = (s.changes.clone(), s.more_available);
        let key = s.commit(self.engine.state()).await.unwrap();
        if !lose_response {
            phone.apply(&changes);
            phone.key = key;
        }
        (changes, more)
    }

    async fn sync_to_end(&self, phone: &mut Phone, opts: DeltaOptions) -> usize {
        let mut rounds = 0;
        loop {
            rounds += 1;
            assert!(rounds < 10_000, "sync does not converge");
            let (changes, more) = self.sync(phone, opts, vec![], false).await;
            if !more && changes.is_empty() {
                return rounds;
            }
        }
    }

    async fn truth(&self) -> BTreeMap<Uid, Flags> {
        let mb = self.mailbox(Origin::Server).await;
        let uids = mb.all_uids(&self.inbox).await.unwrap();
        let states = mb.message_states(&self.inbox, &uids).await.unwrap();
        states.into_iter().map(|m| (m.uid, Flags(m.flags.0 & 0x0F))).collect()
    }
}

fn synced(held: &BTreeMap<Uid, Flags>) -> BTreeMap<Uid, Flags> {
    held.iter().map(|(u, f)| (*u, Flags(f.0 & 0x0F))).collect()
}

#[tokio::test]
async fn initial_sync_is_windowed_newest_first_and_complete() {
    let fx = fixture().await;
    for i in 0..25 {
        fx.store.deliver("alice@example.test", &message(i)).await.unwrap();
    }
    let mut phone = fx.phone("A").await;
    let opts = DeltaOptions { window: 10, ..ALL };
    let (first, more) = fx.sync(&mut phone, opts, vec![], false).await;
    assert!(more);
    assert_eq!(first.len(), 10);
    let uids: Vec<Uid> = first.iter().map(ServerChange::uid).collect();
    assert_eq!(uids, (16..=25).rev().collect::<Vec<_>>(), "newest first");
    fx.sync_to_end(&mut phone, opts).await;
    assert_eq!(synced(&phone.held), fx.truth().await);
}

#[tokio::test]
async fn a_lost_response_is_answered_again_without_duplicates() {
    let fx = fixture().await;
    for i in 0..5 {
        fx.store.deliver("alice@example.test", &message(i)).await.unwrap();
    }
    let mut phone = fx.phone("A").await;
    let (lost, _) = fx.sync(&mut phone, ALL, vec![], true).await;
    let (again, _) = fx.sync(&mut phone, ALL, vec![], false).await;
    assert_eq!(lost, again);
    assert_eq!(phone.held.len(), 5);
    let (none, more) = fx.sync(&mut phone, ALL, vec![], false).await;
    assert!(none.is_empty() && !more);
}

#[tokio::test]
async fn own_changes_are_not_echoed_but_reach_other_devices() {
    let fx = fixture().await;
    fx.store.deliver("alice@example.test", &message(1)).await.unwrap();
    let mut a = fx.phone("A").await;
    let mut b = fx.phone("B").await;
    fx.sync_to_end(&mut a, ALL).await;
    fx.sync_to_end(&mut b, ALL).await;

    let read = ClientOp::SetFlags { uid: 1, change: FlagChange { add: Flags::SEEN, ..Default::default() } };
    let (echo, _) = fx.sync(&mut a, ALL, vec![read], false).await;
    assert!(echo.is_empty(), "device A's own change came back: {echo:?}");
    a.held.insert(1, Flags::SEEN);

    let (seen_by_b, _) = fx.sync(&mut b, ALL, vec![], false).await;
    assert!(matches!(&seen_by_b[..], [ServerChange::Change(m)] if m.flags.contains(Flags::SEEN)));
    assert_eq!(synced(&a.held), fx.truth().await);
    assert_eq!(synced(&b.held), fx.truth().await);
}

#[tokio::test]
async fn deletes_reach_the_device_and_client_deletes_move_to_trash() {
    let fx = fixture().await;
    for i in 0..3 {
        fx.store.deliver("alice@example.test", &message(i)).await.unwrap();
    }
    let mut phone = fx.phone("A").await;
    fx.sync_to_end(&mut phone, ALL).await;
    let server = fx.mailbox(Origin::Server).await;
    server.expunge(&fx.inbox, &[2]).await.unwrap();
    let (changes, _) = fx.sync(&mut phone, ALL, vec![], false).await;
    assert_eq!(changes, vec![ServerChange::Delete(2)]);

    let trash = server.folders().await.unwrap().into_iter().find(|f| f.role == Some(crate::store::SpecialUse::Trash)).unwrap().id;
    let del = ClientOp::Delete { uid: 1, move_to: Some(trash.clone()) };
    let s_changes = fx.sync(&mut phone, ALL, vec![del], false).await.0;
    assert!(s_changes.is_empty());
    phone.held.remove(&1);
    assert_eq!(server.status(&trash).await.unwrap().messages, 1);
    assert_eq!(synced(&phone.held), fx.truth().await);
}

#[tokio::test]
async fn filter_type_limits_and_soft_deletes() {
    let fx = fixture().await;
    let server = fx.mailbox(Origin::Server).await;
    let now = chrono::Utc::now().timestamp();
    let old = server.append(&fx.inbox, &message(1), Flags::NONE, Some(now - 10 * 86_400)).await.unwrap();
    let recent = server.append(&fx.inbox, &message(2), Flags::NONE, Some(now - 2 * 86_400)).await.unwrap();
    let mut phone = fx.phone("A").await;
    let week = DeltaOptions { window: 100, cutoff: filter_cutoff(3, now), filter_type: 3 };
    fx.sync_to_end(&mut phone, week).await;
    assert_eq!(phone.held.keys().copied().collect::<Vec<_>>(), vec![recent]);

    // Widening the window offers the older message; narrowing it soft-deletes.
    let month = DeltaOptions { window: 100, cutoff: filter_cutoff(5, now), filter_type: 5 };
    fx.sync_to_end(&mut phone, month).await;
    assert_eq!(phone.held.keys().copied().collect::<Vec<_>>(), vec![old, recent]);
    let day = DeltaOptions { window: 100, cutoff: filter_cutoff(1, now), filter_type: 1 };
    let (changes, _) = fx.sync(&mut phone, day, vec![], false).await;
    assert!(changes.iter().all(|c| matches!(c, ServerChange::SoftDelete(_))));
    assert!(phone.held.is_empty());
}

#[tokio::test]
async fn retried_client_adds_are_not_appended_twice() {
    let fx = fixture().await;
    let mut phone = fx.phone("A").await;
    let add = ClientOp::Add { client_id: "c1".into(), raw: message(9), flags: Flags::DRAFT };
    let mb = fx.mailbox(Origin::Device("A".into())).await;
    let s = fx
        .engine
        .begin_collection(
            mb.as_ref(),
            CollectionSyncRequest {
                device: phone.pk,
                collection: "1",
                folder: &fx.inbox,
                sync_key: &phone.key,
                options: ALL,
                get_changes: true,
                client_ops: vec![add.clone()],
                client_options: None,
            },
        )
        .await
        .unwrap();
    let first = s.results.clone();
    s.commit(fx.engine.state()).await.unwrap(); // response lost
    let s = fx
        .engine
        .begin_collection(
            mb.as_ref(),
            CollectionSyncRequest {
                device: phone.pk,
                collection: "1",
                folder: &fx.inbox,
                sync_key: &phone.key,
                options: ALL,
                get_changes: true,
                client_ops: vec![add],
                client_options: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(s.results, first);
    phone.key = s.commit(fx.engine.state()).await.unwrap();
    assert_eq!(mb.status(&fx.inbox).await.unwrap().messages, 1);
}

#[tokio::test]
async fn unknown_keys_and_estimates() {
    let fx = fixture().await;
    for i in 0..7 {
        fx.store.deliver("alice@example.test", &message(i)).await.unwrap();
    }
    let mb = fx.mailbox(Origin::Server).await;
    let dev = fx.engine.state().touch_device("alice", "Z", "t", "16.1", None).await.unwrap();
    assert_eq!(fx.engine.estimate(mb.as_ref(), dev.pk, "1", &ALL).await.unwrap(), None);
    let r = fx
        .engine
        .begin_collection(
            mb.as_ref(),
            CollectionSyncRequest {
                device: dev.pk,
                collection: "1",
                folder: &fx.inbox,
                sync_key: "{00000000}1",
                options: ALL,
                get_changes: true,
                client_ops: vec![],
                client_options: None,
            },
        )
        .await;
    assert!(matches!(r, Err(SyncError::InvalidSyncKey)));

    let mut phone = fx.phone("A").await;
    assert_eq!(fx.engine.estimate(mb.as_ref(), phone.pk, "1", &ALL).await.unwrap(), Some(7));
    assert!(fx.engine.has_changes(mb.as_ref(), phone.pk, "1", &ALL).await.unwrap());
    fx.sync(&mut phone, DeltaOptions { window: 3, ..ALL }, vec![], false).await;
    assert_eq!(fx.engine.estimate(mb.as_ref(), phone.pk, "1", &ALL).await.unwrap(), Some(4));
    fx.sync_to_end(&mut phone, ALL).await;
    assert_eq!(fx.engine.estimate(mb.as_ref(), phone.pk, "1", &ALL).await.unwrap(), Some(0));
    assert!(!fx.engine.has_changes(mb.as_ref(), phone.pk, "1", &ALL).await.unwrap());
    mb.set_flags(&fx.inbox, &[3], &FlagChange { add: Flags::FLAGGED, ..Default::default() }).await.unwrap();
    assert_eq!(fx.engine.estimate(mb.as_ref(), phone.pk, "1", &ALL).await.unwrap(), Some(1));
    let garbage = fx
        .engine
        .begin_collection(
            mb.as_ref(),
            CollectionSyncRequest {
                device: phone.pk,
                collection: "1",
                folder: &fx.inbox,
                sync_key: "garbage",
                options: ALL,
                get_changes: true,
                client_ops: vec![],
                client_options: None,
            },
        )
        .await;
    assert!(matches!(garbage, Err(SyncError::InvalidSyncKey)));
}

/// One step of the model test.
#[derive(Debug, Clone)]
enum Step {
    Deliver,
    ServerFlag(usize, bool),
    ServerExpunge(usize),
    /// Device `d` syncs with window `w`, optionally marking one held message read, and
    /// possibly losing the response.
    DeviceSync {
        d: usize,
        w: usize,
        read: Option<usize>,
        lose: bool,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => Just(Step::Deliver),
        2 => (0usize..50, any::<bool>()).prop_map(|(i, s)| Step::ServerFlag(i, s)),
        1 => (0usize..50).prop_map(Step::ServerExpunge),
        4 => (0usize..2, 1usize..6, proptest::option::of(0usize..50), proptest::bool::weighted(0.25))
            .prop_map(|(d, w, read, lose)| Step::DeviceSync { d, w, read, lose }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random interleavings of mailbox changes, syncs of two devices, device changes and
    /// lost responses: after a final full sync both devices hold exactly the folder.
    #[test]
    fn two_devices_converge(steps in proptest::collection::vec(step(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let fx = fixture().await;
            let mut phones = vec![fx.phone("A").await, fx.phone("B").await];
            let server = fx.mailbox(Origin::Server).await;
            let mut n = 0;
            for s in steps {
                match s {
                    Step::Deliver => {
                        n += 1;
                        fx.store.deliver("alice@example.test", &message(n)).await.unwrap();
                    }
                    Step::ServerFlag(i, seen) => {
                        let uids = server.all_uids(&fx.inbox).await.unwrap();
                        if let Some(&uid) = uids.get(i % uids.len().max(1)) {
                            let change = if seen { FlagChange { add: Flags::SEEN, ..Default::default() } } else { FlagChange { remove: Flags::SEEN, ..Default::default() } };
                            server.set_flags(&fx.inbox, &[uid], &change).await.unwrap();
                        }
                    }
                    Step::ServerExpunge(i) => {
                        let uids = server.all_uids(&fx.inbox).await.unwrap();
                        if let Some(&uid) = uids.get(i % uids.len().max(1)) {
                            server.expunge(&fx.inbox, &[uid]).await.unwrap();
                        }
                    }
                    Step::DeviceSync { d, w, read, lose } => {
                        let phone = &mut phones[d];
                        let mut ops = vec![];
                        let held: Vec<Uid> = phone.held.keys().copied().collect();
                        let mut read_uid = None;
                        if let (Some(i), false) = (read, held.is_empty()) {
                            let uid = held[i % held.len()];
                            read_uid = Some(uid);
                            ops.push(ClientOp::SetFlags { uid, change: FlagChange { add: Flags::SEEN, ..Default::default() } });
                        }
                        let opts = DeltaOptions { window: w, ..ALL };
                        fx.sync(phone, opts, ops, lose).await;
                        if let (Some(uid), false) = (read_uid, lose)
                            && let Some(f) = phone.held.get_mut(&uid)
                        {
                            *f = f.union(Flags::SEEN);
                        }
                    }
                }
            }
            let truth = fx.truth().await;
            for phone in &mut phones {
                fx.sync_to_end(phone, DeltaOptions { window: 7, ..ALL }).await;
                assert_eq!(synced(&phone.held), truth);
            }
        });
    }
}
