//! One store conformance suite, written against the `MailStore`/`Mailbox` traits and run
//! against every backend: the embedded store and the IMAP store in front of a private
//! Dovecot. Each check is a generic function over a [`Backend`]; `conformance!` makes one
//! test per backend of it.

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::dovecot::{Dovecot, DovecotOptions};
use pushsync::config::ImapSettings;
use pushsync::store::embedded::{EmbeddedSettings, EmbeddedStore, NewUser};
use pushsync::store::feed::FeedEvent;
use pushsync::store::imap::ImapStore;
use pushsync::store::{
    Account, ChangeFeed, ChangeKind, FlagChange, Flags, FolderId, MailStore, Mailbox, Origin, SharedStore, SpecialUse, StoreError,
    folder_with_role,
};

const PASSWORD: &str = "correct horse";
/// Quota given to the quota test's user, in bytes.
const SMALL_QUOTA: u64 = 20 * 1024;
/// Every check must finish in this time.
const TEST_LIMIT: Duration = Duration::from_secs(120);
/// How long a change may take to reach the feed (Dovecot's NOTIFY batches ~0.5 s).
const FEED_WAIT: Duration = Duration::from_secs(10);

#[async_trait]
trait Backend: Send {
    fn name(&self) -> &'static str;
    fn store(&self) -> SharedStore;
    /// `alice`, authenticated.
    async fn alice(&self) -> Account;
    /// Restarts the store (embedded: reopen the database; IMAP: restart the server and
    /// connect anew) and returns the new account handle.
    async fn restart(&mut self);
    /// Delivers a message to alice's INBOX the way mail arrives on this backend.
    async fn deliver(&self, raw: &[u8]);
    /// A user `carol` with a storage quota of [`SMALL_QUOTA`], authenticated.
    async fn carol_with_quota(&mut self) -> Option<Account>;
}

struct Embedded {
    dir: tempfile::TempDir,
    store: EmbeddedStore,
}

impl Embedded {
    async fn new() -> Embedded {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), EmbeddedSettings::default()).unwrap();
        store
            .add_user(NewUser {
                login: "alice".into(),
                email: Some("alice@example.test".into()),
                display_name: None,
                password: PASSWORD.into(),
            })
            .await
            .unwrap();
        Embedded { dir, store }
    }
}

#[async_trait]
impl Backend for Embedded {
    fn name(&self) -> &'static str {
        "embedded"
    }

    fn store(&self) -> SharedStore {
        Arc::new(self.store.clone())
    }

    async fn alice(&self) -> Account {
        self.store.authenticate("alice", PASSWORD).await.unwrap().expect("alice")
    }

    async fn restart(&mut self) {
        self.store.close_feeds();
        self.store = EmbeddedStore::open(self.dir.path(), EmbeddedSettings::default()).unwrap();
    }

    async fn deliver(&self, raw: &[u8]) {
        self.store.deliver("alice@example.test", raw).await.unwrap();
    }

    async fn carol_with_quota(&mut self) -> Option<Account> {
        self.store
            .add_user(NewUser {
                login: "carol".into(),
                email: Some("carol@example.test".into()),
                display_name: None,
                password: PASSWORD.into(),
            })
            .await
            .unwrap();
        self.store.set_quota("carol", Some(SMALL_QUOTA)).await.unwrap();
        self.store.authenticate("carol", PASSWORD).await.unwrap()
    }
}

struct Imap {
    dovecot: Dovecot,
    store: ImapStore,
}

fn imap_store(dovecot: &Dovecot) -> ImapStore {
    let settings = ImapSettings { operation_timeout_secs: 10, watch_rearm_secs: 5, idle_secs: 30, ..ImapSettings::default() };
    ImapStore::from_config(&dovecot.url(), &settings, 50 * 1024 * 1024).unwrap()
}

impl Imap {
    fn new(test: &str) -> Option<Imap> {
        let dovecot = Dovecot::start_with(test, DovecotOptions::default())?;
        dovecot.add_user("alice", PASSWORD);
        let store = imap_store(&dovecot);
        Some(Imap { dovecot, store })
    }
}

#[async_trait]
impl Backend for Imap {
    fn name(&self) -> &'static str {
        "dovecot"
    }

    fn store(&self) -> SharedStore {
        Arc::new(self.store.clone())
    }

    async fn alice(&self) -> Account {
        self.store.authenticate("alice", PASSWORD).await.unwrap().expect("alice")
    }

    async fn restart(&mut self) {
        self.store.close();
        self.dovecot.stop();
        self.dovecot.start_again();
        self.store = imap_store(&self.dovecot);
    }

    async fn deliver(&self, raw: &[u8]) {
        self.dovecot.deliver("alice@example.test", raw).await.unwrap();
    }

    async fn carol_with_quota(&mut self) -> Option<Account> {
        self.dovecot.add_user_with_quota("carol", PASSWORD, Some(SMALL_QUOTA));
        self.store.authenticate("carol", PASSWORD).await.unwrap()
    }
}

fn message(subject: &str, body_len: usize) -> Vec<u8> {
    let body = "x".repeat(body_len);
    format!(
        "From: Sender <sender@example.test>\r\nTo: alice@example.test\r\nSubject: {subject}\r\nDate: Thu, 26 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{:x}@example.test>\r\n\r\n{body}\r\n",
        rand::random::<u64>()
    )
    .into_bytes()
}

async fn mailbox(b: &dyn Backend, origin: Origin) -> Arc<dyn Mailbox> {
    let store = b.store();
    store.mailbox(&b.alice().await, origin).await.unwrap()
}

async fn role(mb: &Arc<dyn Mailbox>, role: SpecialUse) -> FolderId {
    let folders = mb.folders().await.unwrap();
    folder_with_role(&folders, role).unwrap_or_else(|| panic!("no {role:?} folder in {folders:?}")).id.clone()
}

macro_rules! conformance {
    ($check:ident) => {
        mod $check {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn embedded() {
                let mut b = Embedded::new().await;
                tokio::time::timeout(TEST_LIMIT, super::$check(&mut b)).await.expect("check timed out");
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn dovecot() {
                let Some(mut b) = Imap::new(concat!("store_conformance::", stringify!($check))) else { return };
                let r = tokio::time::timeout(TEST_LIMIT, super::$check(&mut b)).await;
                if r.is_err() {
                    panic!("check timed out; Dovecot said:\n{}", b.dovecot.log());
                }
            }
        }
    };
}

async fn uid_monotonicity(b: &mut dyn Backend) {
    let mb = mailbox(b, Origin::Server).await;
    let inbox = role(&mb, SpecialUse::Inbox).await;
    let before = mb.status(&inbox).await.unwrap();
    let mut uids = Vec::new();
    for i in 0..3 {
        uids.push(mb.append(&inbox, &message(&format!("m{i}"), 10), Flags::NONE, None).await.unwrap());
    }
    assert!(uids.windows(2).all(|w| w[0] < w[1]), "{uids:?}");
    assert!(uids[0] >= before.uidnext);
    mb.expunge(&inbox, &[uids[2]]).await.unwrap();
    drop(mb);
    b.restart().await;
    let mb = mailbox(b, Origin::Server).await;
    let inbox = role(&mb, SpecialUse::Inbox).await;
    let after = mb.status(&inbox).await.unwrap();
    assert_eq!(after.uidvalidity, before.uidvalidity, "{}: UIDVALIDITY survives a restart", b.name());
    assert!(after.uidnext > uids[2], "{}: an expunged UID is never reused: {after:?}", b.name());
    let next = mb.append(&inbox, &message("after restart", 10), Flags::NONE, None).await.unwrap();
    assert!(next > uids[2], "{}: {next} after {uids:?}", b.name());
    assert_eq!(mb.all_uids(&inbox).await.unwrap(), vec![uids[0], uids[1], next]);
}

async fn modseq_grows_on_every_change(b: &mut dyn Backend) {
    let mb = mailbox(b, Origin::Server).await;
    let inbox = role(&mb, SpecialUse::Inbox).await;
    let trash = role(&mb, SpecialUse::Trash).await;
    let h = |s: pushsync::store::FolderStatus| s.highest_modseq;
    let h0 = h(mb.status(&inbox).await.unwrap());
    let uid = mb.append(&inbox, &message("a", 10), Flags::NONE, None).await.unwrap();
    let h1 = h(mb.status(&inbox).await.unwrap());
    assert!(h1 > h0, "append");
    mb.set_flags(&inbox, &[uid], &FlagChange { add: Flags::SEEN, ..Default::default() }).await.unwrap();
    let h2 = h(mb.status(&inbox).await.unwrap());
    assert!(h2 > h1, "flag change");
    let state = mb.message_states(&inbox, &[uid]).await.unwrap().remove(0);
    assert!(state.modseq > h1 && state.modseq <= h2, "{state:?} h1={h1} h2={h2}");
    // A change that changes nothing takes no MODSEQ.
    mb.set_flags(&inbox, &[uid], &FlagChange { add: Flags::SEEN, ..Default::default() }).await.unwrap();
    assert_eq!(h(mb.status(&inbox).await.unwrap()), h2, "no-op flag change");
    mb.set_flags(&inbox, &[uid], &FlagChange { keywords: Some(vec!["Work".into()]), ..Default::default() }).await.unwrap();
    let h3 = h(mb.status(&inbox).await.unwrap());
    assert!(h3 > h2, "keyword change");
    let other = mb.append(&inbox, &message("b", 10), Flags::NONE, None).await.unwrap();
    let h4 = h(mb.status(&inbox).await.unwrap());
    mb.expunge(&inbox, &[other]).await.unwrap();
    let h5 = h(mb.status(&inbox).await.unwrap());
    assert!(h5 > h4, "expunge");
    let t0 = h(mb.status(&trash).await.unwrap());
    mb.move_messages(&inbox, &[uid], &trash).await.unwrap();
    assert!(h(mb.status(&inbox).await.unwrap()) > h5, "move source");
    assert!(h(mb.status(&trash).await.unwrap()) > t0, "move destination");
}

async fn flags_and_keywords(b: &mut dyn Backend) {
    let mb = mailbox(b, Origin::Server).await;
    let inbox = role(&mb, SpecialUse::Inbox).await;
    let uid = mb.append(&inbox, &message("flags", 10), Flags::SEEN, Some(1_700_000_000)).await.unwrap();
    let st = mb.message_states(&inbox, &[uid]).await.unwrap().remove(0);
    assert_eq!(st.flags, Flags::SEEN);
    assert_eq!(st.internal_date, 1_700_000_000);
    assert!(st.keywords.is_empty());
    let change = FlagChange { add: Flags(Flags::FLAGGED.0 | Flags::FORWARDED.0 | Flags::ANSWERED.0), remove: Flags::SEEN, keywords: None };
    mb.set_flags(&inbox, &[uid], &change).await.unwrap();
    let st = mb.message_states(&inbox, &[uid]).await.unwrap().remove(0);
    assert_eq!(st.flags, Flags(Flags::FLAGGED.0 | Flags::FORWARDED.0 | Flags::ANSWERED.0), "{}", b.name());
    // (Categories are single words here: the embedded store keeps keywords space-separated.)
    mb.set_flags(&inbox, &[uid], &FlagChange { keywords: Some(vec!["Work".into(), "Personal".into()]), ..Default::default() })
        .await
        .unwrap();
    let st = mb.message_states(&inbox, &[uid]).await.unwrap().remove(0);
    assert_eq!(st.keywords, vec!["Personal".to_string(), "Work".to_string()], "{}", b.name());
    assert_eq!(st.flags, Flags(Flags::FLAGGED.0 | Flags::FORWARDED.0 | Flags::ANSWERED.0), "keywords leave flags alone");
    mb.set_flags(&inbox, &[uid], &FlagChange { keywords: Some(vec!["Home".into()]), remove: Flags::FORWARDED, ..Default::default() })
        .await
        .unwrap();
    let st = mb.message_states(&inbox, &[uid]).await.unwrap().remove(0);
    assert_eq!(st.keywords, vec!["Home".to_string()]);
    assert_eq!(st.flags, Flags(Flags::FLAGGED.0 | Flags::ANSWERED.0));
    // Unknown UIDs are simply absent.
    assert!(mb.message_states(&inbox, &[uid + 1000]).await.unwrap().is_empty());
    let raw = mb.fetch(&inbox, uid).await.unwrap();
    assert!(String::from_utf8_lossy(&raw).contains("Subject: flags"));
    assert!(matches!(mb.fetch(&inbox, uid + 1000).await, Err(StoreError::MessageNotFound)));
}

async fn move_gives_a_new_uid(b: &mut dyn Backend) {
    let mb = mailbox(b, Origin::Server).await;
    let inbox = role(&mb, SpecialUse::Inbox).await;
    let dest = mb.create_folder(None, "Projects").await.unwrap();
    let a = mb.append(&inbox, &message("move me", 10), Flags::FLAGGED, None).await.unwrap();
    let keep = mb.append(&inbox, &message("stay", 10), Flags::NONE, None).await.unwrap();
    let h = mb.status(&inbox).await.unwrap().highest_modseq;
    let dest_before = mb.status(&dest).await.unwrap();
    let moved = mb.move_messages(&inbox, &[a, 999_999], &dest).await.unwrap();
    assert_eq!(moved.len(), 1, "only existing messages move: {moved:?}");
    let (old, new) = moved[0];
    assert_eq!(old, a);
    assert!(new >= dest_before.uidnext);
    assert_eq!(mb.all_uids(&inbox).await.unwrap(), vec![keep]);
    assert_eq!(mb.all_uids(&dest).await.unwrap(), vec![new]);
    let st = mb.message_states(&dest, &[new]).await.unwrap().remove(0);
    assert_eq!(st.flags, Flags::FLAGGED, "flags travel with the message");
    if let Some(vanished) = mb.vanished_since(&inbox, h).await.unwrap() {
        assert!(vanished.contains(&a), "{vanished:?}");
        assert!(!vanished.contains(&keep));
    }
    assert!(matches!(mb.move_messages(&inbox, &[keep], &FolderId("No such folder".into())).await, Err(StoreError::FolderNotFound)));
}

async fn expunge_and_vanished(b: &mut dyn Backend) {
    let mb = mailbox(b, Origin::Server).await;
    let inbox = role(&mb, SpecialUse::Inbox).await;
    let uids: Vec<u32> = {
        let mut v = Vec::new();
        for i in 0..3 {
            v.push(mb.append(&inbox, &message(&format!("e{i}"), 10), Flags::NONE, None).await.unwrap());
        }
        v
    };
    let h = mb.status(&inbox).await.unwrap().highest_modseq;
    mb.expunge(&inbox, &[uids[1]]).await.unwrap();
    // Expunging what is gone (or never was) is fine.
    mb.expunge(&inbox, &[uids[1], 987_654]).await.unwrap();
    assert_eq!(mb.all_uids(&inbox).await.unwrap(), vec![uids[0], uids[2]]);
    let status = mb.status(&inbox).await.unwrap();
    assert_eq!(status.messages, 2);
    match mb.vanished_since(&inbox, h).await.unwrap() {
        Some(v) => {
            assert!(v.contains(&uids[1]), "{v:?}");
            assert!(!v.contains(&uids[0]) && !v.contains(&uids[2]), "{v:?}");
            assert!(mb.vanished_since(&inbox, status.highest_modseq).await.unwrap().unwrap_or_default().is_empty());
        }
        None => panic!("{}: both backends offer QRESYNC-style VANISHED", b.name()),
    }
    // The folder becoming empty still reports what vanished.
    mb.expunge(&inbox, &[uids[0], uids[2]]).await.unwrap();
    let v = mb.vanished_since(&inbox, h).await.unwrap().unwrap();
    for u in &uids {
        assert!(v.contains(u), "{v:?}");
    }
}

async fn changed_since_ordering_and_limits(b: &mut dyn Backend) {
    let mb = mailbox(b, Origin::Server).await;
    let inbox = role(&mb, SpecialUse::Inbox).await;
    let mut uids = Vec::new();
    for i in 0..6 {
        uids.push(mb.append(&inbox, &message(&format!("c{i}"), 10), Flags::NONE, None).await.unwrap());
    }
    let mark = mb.status(&inbox).await.unwrap().highest_modseq;
    assert!(mb.changed_since(&inbox, mark, 100).await.unwrap().is_empty(), "nothing after the mark");
    mb.set_flags(&inbox, &[uids[3]], &FlagChange { add: Flags::SEEN, ..Default::default() }).await.unwrap();
    mb.set_flags(&inbox, &[uids[0]], &FlagChange { add: Flags::FLAGGED, ..Default::default() }).await.unwrap();
    let changed = mb.changed_since(&inbox, mark, 100).await.unwrap();
    assert_eq!(changed.iter().map(|m| m.uid).collect::<Vec<_>>(), vec![uids[3], uids[0]], "lowest MODSEQ first");
    assert!(changed[0].modseq < changed[1].modseq);
    assert_eq!(changed[1].flags, Flags::FLAGGED);
    let all = mb.changed_since(&inbox, 0, 1000).await.unwrap();
    assert_eq!(all.len(), 6);
    assert!(all.windows(2).all(|w| w[0].modseq <= w[1].modseq), "ascending MODSEQ");
    let first_two = mb.changed_since(&inbox, 0, 2).await.unwrap();
    assert!(first_two.len() >= 2, "{first_two:?}");
    // More than the limit only to complete a group sharing one MODSEQ.
    if first_two.len() > 2 {
        assert!(first_two[2..].iter().all(|m| m.modseq == first_two[1].modseq));
    }
    assert_eq!(first_two[0].uid, all[0].uid);
    // Walking in steps of one sees every message once.
    let mut since = 0;
    let mut walked = Vec::new();
    loop {
        let step = mb.changed_since(&inbox, since, 1).await.unwrap();
        let Some(last) = step.last() else { break };
        since = last.modseq;
        walked.extend(step.iter().map(|m| m.uid));
        assert!(walked.len() <= 6, "the walk must end");
    }
    walked.sort_unstable();
    assert_eq!(walked, uids);
}

async fn messages_below_windows(b: &mut dyn Backend) {
    let mb = mailbox(b, Origin::Server).await;
    let inbox = role(&mb, SpecialUse::Inbox).await;
    let base = 1_750_000_000i64;
    let mut uids = Vec::new();
    for i in 0..10i64 {
        uids.push(mb.append(&inbox, &message(&format!("w{i}"), 10), Flags::NONE, Some(base + i * 86_400)).await.unwrap());
    }
    let uidnext = mb.status(&inbox).await.unwrap().uidnext;
    let w1 = mb.messages_below(&inbox, uidnext, None, 4).await.unwrap();
    assert_eq!(w1.iter().map(|m| m.uid).collect::<Vec<_>>(), uids[6..].iter().rev().copied().collect::<Vec<_>>(), "highest UIDs first");
    let w2 = mb.messages_below(&inbox, w1.last().unwrap().uid, None, 4).await.unwrap();
    assert_eq!(w2.iter().map(|m| m.uid).collect::<Vec<_>>(), uids[2..6].iter().rev().copied().collect::<Vec<_>>());
    let w3 = mb.messages_below(&inbox, w2.last().unwrap().uid, None, 4).await.unwrap();
    assert_eq!(w3.iter().map(|m| m.uid).collect::<Vec<_>>(), vec![uids[1], uids[0]]);
    assert!(mb.messages_below(&inbox, uids[0], None, 4).await.unwrap().is_empty());
    // Received at or after a cutoff, to the second (half a day into message 6's day).
    let cutoff = base + 5 * 86_400 + 43_200;
    let recent = mb.messages_below(&inbox, uidnext, Some(cutoff), 100).await.unwrap();
    assert_eq!(recent.iter().map(|m| m.uid).collect::<Vec<_>>(), uids[6..].iter().rev().copied().collect::<Vec<_>>());
    let exact = mb.messages_below(&inbox, uidnext, Some(base + 6 * 86_400), 100).await.unwrap();
    assert_eq!(exact.len(), 4, "the boundary itself is in");
    assert_eq!(mb.count(&inbox, None, None).await.unwrap(), 10);
    assert_eq!(mb.count(&inbox, Some(uids[5]), None).await.unwrap(), 5);
    assert_eq!(mb.count(&inbox, None, Some(cutoff)).await.unwrap(), 4);
    assert_eq!(mb.count(&inbox, Some(uids[8]), Some(cutoff)).await.unwrap(), 2);
}

async fn special_use_folders(b: &mut dyn Backend) {
    let mb = mailbox(b, Origin::Server).await;
    let inbox = role(&mb, SpecialUse::Inbox).await;
    let folders = mb.folders().await.unwrap();
    for r in [SpecialUse::Inbox, SpecialUse::Drafts, SpecialUse::Sent, SpecialUse::Trash, SpecialUse::Junk] {
        let f = folder_with_role(&folders, r).unwrap_or_else(|| panic!("{}: no {r:?} in {folders:?}", b.name()));
        assert_eq!(folders.iter().filter(|x| x.role == Some(r)).count(), 1);
        assert!(f.parent.is_none());
        let st = mb.status(&f.id).await.unwrap();
        assert_eq!(st.uidvalidity, f.status.uidvalidity);
    }
    let sent = role(&mb, SpecialUse::Sent).await;
    assert!(matches!(mb.rename_folder(&sent, None, "Elsewhere").await, Err(StoreError::SpecialFolder)));
    assert!(matches!(mb.delete_folder(&sent).await, Err(StoreError::SpecialFolder)));
    assert!(matches!(mb.delete_folder(&inbox).await, Err(StoreError::SpecialFolder)));
    assert!(matches!(mb.status(&FolderId("No such folder".into())).await, Err(StoreError::FolderNotFound)));
}

async fn folder_create_rename_delete(b: &mut dyn Backend) {
    let mb = mailbox(b, Origin::Server).await;
    let projects = mb.create_folder(None, "Projects").await.unwrap();
    let child = mb.create_folder(Some(&projects), "2026").await.unwrap();
    assert!(matches!(mb.create_folder(None, "Projects").await, Err(StoreError::FolderExists)));
    assert!(matches!(mb.create_folder(None, "").await, Err(StoreError::InvalidFolderName)));
    assert!(matches!(mb.create_folder(Some(&FolderId("Nope".into())), "x").await, Err(StoreError::FolderNotFound)));
    let folders = mb.folders().await.unwrap();
    let c = folders.iter().find(|f| f.id == child).expect("child listed");
    assert_eq!(c.name, "2026");
    assert_eq!(c.parent.as_ref(), Some(&projects));
    let uid = mb.append(&child, &message("in child", 10), Flags::NONE, None).await.unwrap();

    let work = mb.rename_folder(&projects, None, "Work").await.unwrap();
    let folders = mb.folders().await.unwrap();
    assert!(folders.iter().all(|f| f.name != "Projects"), "{folders:?}");
    let moved_child = folders.iter().find(|f| f.name == "2026").expect("child follows its parent");
    assert_eq!(moved_child.parent.as_ref(), Some(&work));
    assert_eq!(mb.all_uids(&moved_child.id).await.unwrap(), vec![uid], "messages follow");
    // Moving a folder under itself is refused.
    assert!(matches!(mb.rename_folder(&work, Some(&moved_child.id), "Loop").await, Err(StoreError::InvalidFolderName)));
    let other = mb.create_folder(None, "Other").await.unwrap();
    assert!(matches!(mb.rename_folder(&other, None, "Work").await, Err(StoreError::FolderExists)));

    mb.delete_folder(&work).await.unwrap();
    let folders = mb.folders().await.unwrap();
    assert!(folders.iter().all(|f| f.name != "Work" && f.name != "2026"), "{folders:?}");
    assert!(matches!(mb.delete_folder(&work).await, Err(StoreError::FolderNotFound)));
    assert!(matches!(mb.rename_folder(&work, None, "X").await, Err(StoreError::FolderNotFound)));
}

async fn quota_refusal(b: &mut dyn Backend) {
    let Some(carol) = b.carol_with_quota().await else { panic!("{}: carol", b.name()) };
    let store = b.store();
    let mb = store.mailbox(&carol, Origin::Server).await.unwrap();
    let inbox = role(&mb, SpecialUse::Inbox).await;
    let q = mb.quota().await.unwrap();
    assert_eq!(q.limit_bytes, Some(SMALL_QUOTA), "{}: {q:?}", b.name());
    mb.append(&inbox, &message("fits", 1000), Flags::NONE, None).await.unwrap();
    match mb.append(&inbox, &message("too big", 2 * SMALL_QUOTA as usize), Flags::NONE, None).await {
        Err(StoreError::QuotaExceeded { limit, .. }) => assert_eq!(limit, SMALL_QUOTA, "{}", b.name()),
        other => panic!("{}: expected a quota refusal, got {other:?}", b.name()),
    }
    assert_eq!(mb.all_uids(&inbox).await.unwrap().len(), 1, "nothing half-stored");
    assert!(mb.quota().await.unwrap().used_bytes > 0);
}

/// Waits for a change of `kind` in `folder` on the feed, skipping others.
async fn expect_change(feed: &mut ChangeFeed, folder: &FolderId, kind: ChangeKind) -> pushsync::store::StoreChange {
    let deadline = tokio::time::Instant::now() + FEED_WAIT;
    loop {
        match tokio::time::timeout_at(deadline, feed.next()).await {
            Ok(FeedEvent::Change(c)) if c.kind == kind && (c.folder == *folder || kind == ChangeKind::Hierarchy) => return c,
            Ok(FeedEvent::Change(_)) => continue,
            Ok(other) => panic!("feed ended: {other:?}"),
            Err(_) => panic!("no {kind:?} change in {folder} within {FEED_WAIT:?}"),
        }
    }
}

async fn change_feed_delivers_every_kind(b: &mut dyn Backend) {
    let account = b.alice().await;
    let store = b.store();
    let server = store.mailbox(&account, Origin::Server).await.unwrap();
    let phone = store.mailbox(&account, Origin::Device("PHONE-A".into())).await.unwrap();
    let mut feed = store.watch(&account).await.unwrap();
    let inbox = role(&server, SpecialUse::Inbox).await;

    b.deliver(&message("delivered", 10)).await;
    let c = expect_change(&mut feed, &inbox, ChangeKind::MessageNew).await;
    assert_eq!(c.origin, Origin::Server, "{}: a delivery is nobody's own change", b.name());
    let uids = server.all_uids(&inbox).await.unwrap();

    phone.set_flags(&inbox, &uids, &FlagChange { add: Flags::SEEN, ..Default::default() }).await.unwrap();
    let c = expect_change(&mut feed, &inbox, ChangeKind::MessageFlags).await;
    assert_eq!(c.origin, Origin::Device("PHONE-A".into()), "{}: the phone's own change is attributed to it", b.name());

    server.set_flags(&inbox, &uids, &FlagChange { add: Flags::FLAGGED, ..Default::default() }).await.unwrap();
    let c = expect_change(&mut feed, &inbox, ChangeKind::MessageFlags).await;
    assert_eq!(c.origin, Origin::Server, "{}", b.name());

    let drafts = role(&server, SpecialUse::Drafts).await;
    phone.append(&drafts, &message("draft", 10), Flags::DRAFT, None).await.unwrap();
    let c = expect_change(&mut feed, &drafts, ChangeKind::MessageNew).await;
    assert_eq!(c.origin, Origin::Device("PHONE-A".into()), "{}", b.name());

    server.expunge(&inbox, &uids).await.unwrap();
    let c = expect_change(&mut feed, &inbox, ChangeKind::MessageExpunged).await;
    assert_eq!(c.origin, Origin::Server);

    let created = phone.create_folder(None, "Feed test").await.unwrap();
    let c = expect_change(&mut feed, &created, ChangeKind::Hierarchy).await;
    assert_eq!(c.origin, Origin::Device("PHONE-A".into()), "{}: the phone created it", b.name());
    server.delete_folder(&created).await.unwrap();
    let c = expect_change(&mut feed, &created, ChangeKind::Hierarchy).await;
    assert_eq!(c.origin, Origin::Server, "{}", b.name());
}

async fn authentication(b: &mut dyn Backend) {
    let store = b.store();
    let a = store.authenticate("alice", PASSWORD).await.unwrap().expect("right password");
    assert_eq!(&*a.login, "alice");
    assert_eq!(a.email, if b.name() == "embedded" { "alice@example.test" } else { "alice@127.0.0.1" });
    assert!(store.authenticate("alice", "wrong").await.unwrap().is_none());
    assert!(store.authenticate("nobody", PASSWORD).await.unwrap().is_none());
    let upper = store.authenticate("ALICE", PASSWORD).await.unwrap().expect("case-insensitive login");
    assert_eq!(&*upper.login, "alice");
}

async fn search_and_unicode_names(b: &mut dyn Backend) {
    let mb = mailbox(b, Origin::Server).await;
    let inbox = role(&mb, SpecialUse::Inbox).await;
    let folder = mb.create_folder(None, "Entwürfe ✓ & more").await.unwrap();
    let listed = mb.folders().await.unwrap();
    let f = listed.iter().find(|f| f.id == folder).expect("listed");
    assert_eq!(f.name, "Entwürfe ✓ & more", "{}", b.name());
    let base = 1_760_000_000i64;
    let zebra = mb.append(&folder, &message("zebra crossing", 10), Flags::NONE, Some(base)).await.unwrap();
    let _other = mb.append(&inbox, &message("lions", 10), Flags::NONE, Some(base + 86_400)).await.unwrap();
    let zebra2 = mb.append(&inbox, &message("another zebra", 10), Flags::NONE, Some(base + 2 * 86_400)).await.unwrap();
    let q = pushsync::store::SearchQuery { text: Some("zebra".into()), limit: 10, ..Default::default() };
    let hits = mb.search(&q).await.unwrap();
    assert_eq!(
        hits.iter().map(|h| (h.folder.clone(), h.uid)).collect::<Vec<_>>(),
        vec![(inbox.clone(), zebra2), (folder.clone(), zebra)],
        "{}: newest first",
        b.name()
    );
    let recent =
        pushsync::store::SearchQuery { text: Some("zebra".into()), received_after: Some(base + 3600), limit: 10, ..Default::default() };
    assert_eq!(mb.search(&recent).await.unwrap().len(), 1);
    let only = pushsync::store::SearchQuery { text: Some("zebra".into()), folders: vec![folder.clone()], limit: 10, ..Default::default() };
    assert_eq!(mb.search(&only).await.unwrap().len(), 1);
    // Several words: each must appear, in any order, not as a phrase.
    let words = pushsync::store::SearchQuery { text: Some("crossing  zebra".into()), limit: 10, ..Default::default() };
    let hits = mb.search(&words).await.unwrap();
    assert_eq!(hits.iter().map(|h| h.uid).collect::<Vec<_>>(), vec![zebra], "{}", b.name());
    mb.delete_folder(&folder).await.unwrap();
}

conformance!(uid_monotonicity);
conformance!(search_and_unicode_names);
conformance!(modseq_grows_on_every_change);
conformance!(flags_and_keywords);
conformance!(move_gives_a_new_uid);
conformance!(expunge_and_vanished);
conformance!(changed_since_ordering_and_limits);
conformance!(messages_below_windows);
conformance!(special_use_folders);
conformance!(folder_create_rename_delete);
conformance!(quota_refusal);
conformance!(change_feed_delivers_every_kind);
conformance!(authentication);
