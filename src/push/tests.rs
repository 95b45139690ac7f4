use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::*;
use crate::store::embedded::test_support::store_with_alice;
use crate::store::{MailStore, SpecialUse};

async fn setup() -> (tempfile::TempDir, crate::store::embedded::EmbeddedStore, Account, Arc<PushHub>, FolderId) {
    let (dir, store, account) = store_with_alice().await;
    let mb = store.mailbox(&account, Origin::Server).await.unwrap();
    let inbox = mb.folders().await.unwrap().into_iter().find(|f| f.role == Some(SpecialUse::Inbox)).unwrap().id;
    let shared: SharedStore = Arc::new(store.clone());
    let hub = PushHub::new(shared, Arc::new(Metrics::new()), Duration::from_secs(30), CancellationToken::new());
    (dir, store, account, hub, inbox)
}

const BEAT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_delivery_wakes_the_device_watching_that_folder_only() {
    let (_d, store, account, hub, inbox) = setup().await;
    let mb = store.mailbox(&account, Origin::Server).await.unwrap();
    let other = mb.create_folder(None, "Lists").await.unwrap();
    let mut on_inbox = hub.register(&account, "A", vec![inbox.clone()], false).await;
    let mut on_other = hub.register(&account, "B", vec![other.clone()], false).await;
    store.deliver("alice@example.test", b"Subject: hi\r\n\r\nhi\r\n").await.unwrap();
    match on_inbox.wait(BEAT).await {
        Some(Wake::Changed { folders, .. }) => assert_eq!(folders, vec![inbox]),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(on_other.wait(Duration::from_millis(50)).await, None);
}

#[tokio::test]
async fn a_device_is_not_woken_by_its_own_change() {
    let (_d, store, account, hub, inbox) = setup().await;
    store.deliver("alice@example.test", b"Subject: hi\r\n\r\nhi\r\n").await.unwrap();
    let mut a = hub.register(&account, "A", vec![inbox.clone()], false).await;
    let mut b = hub.register(&account, "B", vec![inbox.clone()], false).await;
    let as_a = store.mailbox(&account, Origin::Device("A".into())).await.unwrap();
    as_a.set_flags(&inbox, &[1], &crate::store::FlagChange { add: crate::store::Flags::SEEN, ..Default::default() }).await.unwrap();
    assert!(matches!(b.wait(BEAT).await, Some(Wake::Changed { .. })));
    assert_eq!(a.wait(Duration::from_millis(50)).await, None);
}

#[tokio::test]
async fn a_second_request_supersedes_the_first() {
    let (_d, _store, account, hub, inbox) = setup().await;
    let mut first = hub.register(&account, "A", vec![inbox.clone()], false).await;
    let _second = hub.register(&account, "A", vec![inbox], false).await;
    assert_eq!(first.wait(BEAT).await, Some(Wake::Superseded));
    assert_eq!(hub.waiting_devices(), 1);
}

#[tokio::test(start_paused = true)]
async fn heartbeats_expire_and_idle_subscriptions_end_after_the_grace_period() {
    let (_d, _store, account, hub, inbox) = setup().await;
    let mut r = hub.register(&account, "A", vec![inbox], false).await;
    assert_eq!(hub.watched_users(), 1);
    assert_eq!(r.wait(Duration::from_secs(480)).await, None, "heartbeat expiry");
    drop(r);
    assert_eq!(hub.waiting_devices(), 0);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(hub.watched_users(), 1, "kept during the grace period");
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(hub.watched_users(), 0, "dropped after it");
}

#[tokio::test]
async fn kicks_and_shutdown_answer_waiters() {
    let (_d, _store, account, hub, inbox) = setup().await;
    let mut a = hub.register(&account, "A", vec![inbox.clone()], false).await;
    let mut b = hub.register(&account, "B", vec![inbox.clone()], false).await;
    assert!(hub.kick_device("alice", "A"));
    assert_eq!(a.wait(BEAT).await, Some(Wake::Kicked));
    assert_eq!(hub.kick_user("alice"), 1);
    assert_eq!(b.wait(BEAT).await, Some(Wake::Kicked));
    let mut c = hub.register(&account, "C", vec![inbox], true).await;
    assert_eq!(hub.wake_all_for_shutdown(), 1);
    assert_eq!(c.wait(BEAT).await, Some(Wake::Shutdown));
}

#[tokio::test]
async fn hierarchy_changes_wake_devices_that_watch_the_hierarchy() {
    let (_d, store, account, hub, inbox) = setup().await;
    let mut a = hub.register(&account, "A", vec![inbox], true).await;
    let mb = store.mailbox(&account, Origin::Server).await.unwrap();
    mb.create_folder(None, "New").await.unwrap();
    assert_eq!(a.wait(BEAT).await, Some(Wake::Hierarchy));
}
