//! Phones talking to the real pushsync server in front of a real Dovecot: setup, windows,
//! flag changes reaching the IMAP server, push by the IMAP watcher and by Dovecot's webhook,
//! own changes not echoed, and what happens when Dovecot stops, freezes and comes back.

mod common;

use std::time::{Duration, Instant};

use common::dovecot::{Dovecot, DovecotOptions, free_port};
use common::*;
use pushsync::store::{FlagChange, Flags, FolderId, Origin, SpecialUse, folder_with_role};
use pushsync::wbxml::{Element, tag};

/// Every test is bounded by this.
const LIMIT: Duration = Duration::from_secs(150);
const SECRET: &str = "test-webhook-secret";

/// Dovecot with user alice, and pushsync in front of it (short heartbeats allowed).
async fn setup(
    test: &str,
    webhook: bool,
    tweak: impl Fn(&mut pushsync::config::Config) + Send + Sync + 'static,
) -> Option<(Dovecot, TestServer)> {
    let hook_port = free_port();
    let opts = DovecotOptions {
        webhook: webhook.then(|| (format!("http://127.0.0.1:{hook_port}/dovecot"), SECRET.to_string())),
        ..Default::default()
    };
    let dovecot = Dovecot::start_with(test, opts)?;
    dovecot.add_user("alice", PASSWORD);
    let srv = TestServer::start_imap(&dovecot, move |c| {
        c.ping.min_heartbeat_secs = 1;
        c.imap.watch_rearm_secs = 5;
        if webhook {
            c.webhook.listen = Some(format!("127.0.0.1:{hook_port}").parse().unwrap());
            c.webhook.secret = Some(SECRET.into());
        }
        tweak(c);
    })
    .await;
    srv.enable_sync("alice").await;
    Some((dovecot, srv))
}

/// A phone that has synced `collection` to the end; returns it and the last SyncKey.
async fn synced_phone(srv: &TestServer, device: &str) -> (Phone, String, String) {
    let mut phone = srv.phone("alice", device);
    let inbox = phone.folder_id("2").await;
    let r = phone.post("Sync", Some(&sync_request(&inbox, "0", 100, vec![]))).await.doc();
    let mut key = text_of(collection(&r), tag::air_sync::SYNC_KEY);
    loop {
        let r = phone.post("Sync", Some(&sync_request(&inbox, &key, 100, vec![]))).await;
        if r.body.is_empty() {
            break;
        }
        key = text_of(collection(&r.doc()), tag::air_sync::SYNC_KEY);
    }
    (phone, inbox, key)
}

/// A second handle on the same device (a Ping runs on its own connection).
fn twin(srv: &TestServer, phone: &Phone) -> Phone {
    let mut p = srv.phone(&phone.user, &phone.device_id);
    p.policy_key = phone.policy_key;
    p.folder_key = phone.folder_key.clone();
    p
}

/// Waits until `n` devices wait in the push hub.
async fn waiting(srv: &TestServer, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while srv.app().hub.waiting_devices() < n {
        assert!(Instant::now() < deadline, "the Ping never started waiting");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until alice's IMAP watcher is up (it has its baseline), bounded.
async fn settle(srv: &TestServer) {
    let imap = srv.app().imap.clone().expect("IMAP store");
    let deadline = Instant::now() + Duration::from_secs(15);
    while imap.ready_watchers() < 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
}

async fn alice_mailbox(srv: &TestServer) -> std::sync::Arc<dyn pushsync::store::Mailbox> {
    let app = srv.app();
    let account = app.store.authenticate("alice", PASSWORD).await.unwrap().expect("alice");
    app.store.mailbox(&account, Origin::Server).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_sets_up_syncs_in_windows_and_its_flag_change_reaches_dovecot() {
    let Some((dovecot, srv)) = setup("imap_e2e::phone_flows", false, |_| {}).await else { return };
    tokio::time::timeout(LIMIT, async {
        for i in 0..5 {
            dovecot.deliver_simple("alice@example.test", &format!("message {i}")).await;
        }
        let mut phone = srv.phone("alice", "PHONE1");
        let folders = phone.setup().await;
        for t in ["2", "3", "4", "5"] {
            assert!(folders.iter().any(|(_, _, ty)| ty == t), "folder type {t} missing from {folders:?}");
        }
        let inbox = folders.iter().find(|(_, _, t)| t == "2").unwrap().1.clone();
        let r = phone.post("Sync", Some(&sync_request(&inbox, "0", 2, vec![]))).await.doc();
        let mut key = text_of(collection(&r), tag::air_sync::SYNC_KEY);
        let mut items = Vec::new();
        let mut windows = 0;
        loop {
            let r = phone.post("Sync", Some(&sync_request(&inbox, &key, 2, vec![]))).await;
            if r.body.is_empty() {
                break;
            }
            let doc = r.doc();
            let c = collection(&doc);
            key = text_of(c, tag::air_sync::SYNC_KEY);
            let cmds = commands(c);
            assert!(cmds.len() <= 2, "window of 2: {cmds:?}");
            items.extend(cmds.into_iter().filter(|(cmd, _)| cmd == "Add").map(|(_, id)| id));
            windows += 1;
            assert!(windows < 10, "the sync must end");
            if c.child(tag::air_sync::MORE_AVAILABLE).is_none() {
                break;
            }
        }
        assert_eq!(items.len(), 5, "{items:?}");
        assert!(windows >= 3);

        // The phone reads the newest message: Dovecot has it \Seen.
        let newest = items[0].clone();
        let read = Element::new(tag::air_sync::COMMANDS).with(
            Element::new(tag::air_sync::CHANGE)
                .with_text(tag::air_sync::SERVER_ID, newest.clone())
                .with(Element::new(tag::air_sync::APPLICATION_DATA).with_text(tag::email::READ, "1")),
        );
        let r = phone.post("Sync", Some(&sync_request(&inbox, &key, 2, vec![read]))).await.doc();
        assert_eq!(text_of(collection(&r), tag::air_sync::STATUS), "1");
        let uid: u32 = newest.rsplit_once(':').unwrap().1.parse().unwrap();
        let mb = alice_mailbox(&srv).await;
        let state = mb.message_states(&FolderId("INBOX".into()), &[uid]).await.unwrap();
        assert!(state[0].flags.contains(Flags::SEEN), "Dovecot did not get the flag: {state:?}");
    })
    .await
    .unwrap_or_else(|_| panic!("timed out; Dovecot said:\n{}", dovecot.log()));
}

/// A delivery by LMTP answers a waiting Ping with Status 2 naming the Inbox; returns how
/// long it took.
async fn delivery_answers_ping(dovecot: &Dovecot, srv: &TestServer) -> Duration {
    let (phone, inbox, _) = synced_phone(srv, "PINGER").await;
    let pinger = twin(srv, &phone);
    let folder = inbox.clone();
    let wait = tokio::spawn(async move { pinger.post("Ping", Some(&ping(60, &[&folder]))).await.doc() });
    waiting(srv, 1).await;
    settle(srv).await;
    let sent = Instant::now();
    dovecot.deliver_simple("alice@example.test", "push me").await;
    let r = tokio::time::timeout(Duration::from_secs(20), wait)
        .await
        .unwrap_or_else(|_| panic!("the Ping was not answered; Dovecot said:\n{}", dovecot.log()))
        .unwrap();
    let took = sent.elapsed();
    assert_eq!(text_of(&r, tag::ping::STATUS), "2", "{}", pushsync::wbxml::to_xml(&r));
    assert_eq!(ping_folders(&r), vec![inbox]);
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_answers_a_waiting_ping_through_the_imap_watcher() {
    let Some((dovecot, srv)) = setup("imap_e2e::watcher_push", false, |_| {}).await else { return };
    let took = tokio::time::timeout(LIMIT, delivery_answers_ping(&dovecot, &srv))
        .await
        .unwrap_or_else(|_| panic!("timed out:\n{}", dovecot.log()));
    eprintln!("IMAP watcher push took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_answers_a_waiting_ping_through_the_webhook() {
    // NOTIFY and IDLE are off and the sweep is slow: only the webhook can answer in time.
    let Some((dovecot, srv)) = setup("imap_e2e::webhook_push", true, |c| {
        c.imap.disable_extensions = vec!["NOTIFY".into(), "IDLE".into()];
        c.imap.watch_rearm_secs = 120;
    })
    .await
    else {
        return;
    };
    assert!(srv.server.as_ref().unwrap().info.webhook_listen.is_some());
    let took = tokio::time::timeout(LIMIT, delivery_answers_ping(&dovecot, &srv))
        .await
        .unwrap_or_else(|_| panic!("timed out:\n{}", dovecot.log()));
    eprintln!("webhook push took {took:?}");
    assert!(took < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_wants_its_secret() {
    let Some((dovecot, srv)) = setup("imap_e2e::webhook_secret", true, |_| {}).await else { return };
    let addr = srv.server.as_ref().unwrap().info.webhook_listen.expect("webhook listening");
    let client: hyper_util::client::legacy::Client<_, http_body_util::Full<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let post = |auth: Option<&str>, body: &str| {
        let mut b = http::Request::builder().method("POST").uri(format!("http://{addr}/dovecot"));
        if let Some(a) = auth {
            b = b.header("Authorization", a);
        }
        client.request(b.body(http_body_util::Full::new(bytes::Bytes::from(body.to_string()))).unwrap())
    };
    let ok = r#"{"user":"alice","service":"lmtp","events":[{"event":"MessageNew","mailbox":"INBOX","uid":1,"uidvalidity":1}]}"#;
    assert_eq!(post(None, ok).await.unwrap().status(), 401);
    assert_eq!(post(Some("Bearer wrong"), ok).await.unwrap().status(), 401);
    assert_eq!(post(Some(&format!("Bearer {SECRET}")), ok).await.unwrap().status(), 204);
    assert_eq!(post(Some(&format!("Bearer {SECRET}")), "not json").await.unwrap().status(), 400);
    let huge = "x".repeat(2 * 1024 * 1024);
    // 413, or the connection closed on a body that is still coming: refused either way.
    if let Ok(r) = post(Some(&format!("Bearer {SECRET}")), &huge).await {
        assert_eq!(r.status(), 413);
    }
    drop(dovecot);
}

/// Own changes: device A's flag change (through Sync, on the IMAP server) wakes B's Ping,
/// not A's.
async fn own_change_is_not_echoed(dovecot: &Dovecot, srv: &TestServer) {
    dovecot.deliver_simple("alice@example.test", "to be read").await;
    let (a, inbox, key_a) = synced_phone(srv, "A").await;
    let (b, _, _) = synced_phone(srv, "B").await;
    let a_pinger = twin(srv, &a);
    let (i1, i2) = (inbox.clone(), inbox.clone());
    let a_wait = tokio::spawn(async move { a_pinger.post("Ping", Some(&ping(8, &[&i1]))).await.doc() });
    let b_wait = tokio::spawn(async move { b.post("Ping", Some(&ping(60, &[&i2]))).await.doc() });
    waiting(srv, 2).await;
    // The hub goes on (after at most 5 s) even if the watcher is still starting: give it time
    // to take its baseline, so the change below is news to it.
    settle(srv).await;
    let mb = alice_mailbox(srv).await;
    let uid = *mb.all_uids(&FolderId("INBOX".into())).await.unwrap().last().unwrap();
    let read = Element::new(tag::air_sync::COMMANDS).with(
        Element::new(tag::air_sync::CHANGE)
            .with_text(tag::air_sync::SERVER_ID, format!("{inbox}:{uid}"))
            .with(Element::new(tag::air_sync::APPLICATION_DATA).with_text(tag::email::READ, "1")),
    );
    let r = a.post("Sync", Some(&sync_request(&inbox, &key_a, 100, vec![read]))).await.doc();
    assert_eq!(text_of(collection(&r), tag::air_sync::STATUS), "1");
    let rb = tokio::time::timeout(Duration::from_secs(20), b_wait).await.expect("B is woken").unwrap();
    assert_eq!(text_of(&rb, tag::ping::STATUS), "2");
    // A's Ping runs to its heartbeat.
    let ra = tokio::time::timeout(Duration::from_secs(20), a_wait).await.expect("A's Ping ends").unwrap();
    assert_eq!(text_of(&ra, tag::ping::STATUS), "1", "A was woken by its own change");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_devices_own_change_is_not_echoed_through_imap() {
    let Some((dovecot, srv)) = setup("imap_e2e::own_change_imap", false, |_| {}).await else { return };
    tokio::time::timeout(LIMIT, own_change_is_not_echoed(&dovecot, &srv)).await.unwrap_or_else(|_| panic!("timed out:\n{}", dovecot.log()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_devices_own_change_is_not_echoed_through_the_webhook() {
    let Some((dovecot, srv)) = setup("imap_e2e::own_change_webhook", true, |_| {}).await else { return };
    tokio::time::timeout(LIMIT, own_change_is_not_echoed(&dovecot, &srv)).await.unwrap_or_else(|_| panic!("timed out:\n{}", dovecot.log()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dovecot_stopping_under_a_waiting_ping_ends_it_cleanly_and_push_recovers() {
    let Some((mut dovecot, srv)) = setup("imap_e2e::stop_under_ping", false, |_| {}).await else { return };
    tokio::time::timeout(LIMIT, async {
        let (phone, inbox, _) = synced_phone(&srv, "P").await;
        let pinger = twin(&srv, &phone);
        let folder = inbox.clone();
        let wait = tokio::spawn(async move { pinger.post("Ping", Some(&ping(4, &[&folder]))).await });
        waiting(&srv, 1).await;
        dovecot.stop();
        let r = tokio::time::timeout(Duration::from_secs(30), wait).await.expect("the Ping hung").unwrap();
        let status = text_of(&r.doc(), tag::ping::STATUS);
        assert!(status == "1" || status == "8", "Ping ended with status {status}");

        // While Dovecot is down, requests fail fast and cleanly.
        let started = Instant::now();
        let r = phone.post("Ping", Some(&ping(4, &[&inbox]))).await;
        let status = text_of(&r.doc(), tag::ping::STATUS);
        assert!(status == "1" || status == "8", "Ping while down: {status}");
        assert!(started.elapsed() < Duration::from_secs(15));

        dovecot.start_again();
        // Push works again (the hub resubscribes with backoff; retry the Ping until a
        // delivery answers it).
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut delivered = false;
        loop {
            assert!(Instant::now() < deadline, "push never recovered:\n{}", dovecot.log());
            let pinger = twin(&srv, &phone);
            let folder = inbox.clone();
            let wait = tokio::spawn(async move { pinger.post("Ping", Some(&ping(5, &[&folder]))).await });
            tokio::time::sleep(Duration::from_millis(500)).await;
            if !delivered && srv.app().hub.waiting_devices() == 1 {
                dovecot.deliver_simple("alice@example.test", "after the restart").await;
                delivered = true;
            }
            let r = tokio::time::timeout(Duration::from_secs(30), wait).await.expect("Ping hung").unwrap();
            if r.status == 200 && text_of(&r.doc(), tag::ping::STATUS) == "2" {
                assert_eq!(ping_folders(&r.doc()), vec![inbox.clone()]);
                break;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out; Dovecot said:\n{}", dovecot.log()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_in_flight_when_dovecot_freezes_gets_a_server_error_not_a_hang() {
    let Some((mut dovecot, srv)) = setup("imap_e2e::freeze_under_sync", false, |c| c.imap.operation_timeout_secs = 3).await else { return };
    tokio::time::timeout(LIMIT, async {
        dovecot.deliver_simple("alice@example.test", "one").await;
        let (phone, inbox, key) = synced_phone(&srv, "S").await;
        dovecot.deliver_simple("alice@example.test", "two").await;
        dovecot.freeze();
        let started = Instant::now();
        let r = phone.post("Sync", Some(&sync_request(&inbox, &key, 100, vec![]))).await;
        let took = started.elapsed();
        dovecot.thaw();
        assert!(took < Duration::from_secs(20), "the Sync took {took:?}");
        let doc = r.doc();
        let status = doc
            .child(tag::air_sync::COLLECTIONS)
            .and_then(|c| c.child(tag::air_sync::COLLECTION))
            .map(|c| text_of(c, tag::air_sync::STATUS))
            .unwrap_or_else(|| text_of(&doc, tag::air_sync::STATUS));
        assert_eq!(status, "5", "a frozen server is a server error: {}", pushsync::wbxml::to_xml(&doc));

        // Stopped outright: the same, at once.
        dovecot.stop();
        let r = phone.post("Sync", Some(&sync_request(&inbox, &key, 100, vec![]))).await;
        let doc = r.doc();
        let status = doc
            .child(tag::air_sync::COLLECTIONS)
            .and_then(|c| c.child(tag::air_sync::COLLECTION))
            .map(|c| text_of(c, tag::air_sync::STATUS))
            .unwrap_or_else(|| text_of(&doc, tag::air_sync::STATUS));
        assert_eq!(status, "5");

        // Back: the same key still works and brings the message.
        dovecot.start_again();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = phone.post("Sync", Some(&sync_request(&inbox, &key, 100, vec![]))).await;
            if !r.body.is_empty() {
                let doc = r.doc();
                if let Some(c) = doc.child(tag::air_sync::COLLECTIONS).and_then(|c| c.child(tag::air_sync::COLLECTION))
                    && text_of(c, tag::air_sync::STATUS) == "1"
                {
                    assert_eq!(commands(c).iter().filter(|(cmd, _)| cmd == "Add").count(), 1);
                    break;
                }
            }
            assert!(Instant::now() < deadline, "Sync never recovered");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out; Dovecot said:\n{}", dovecot.log()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_while_the_watcher_reconnects_is_still_pushed() {
    let Some((mut dovecot, srv)) = setup("imap_e2e::deliver_during_reconnect", false, |_| {}).await else { return };
    tokio::time::timeout(LIMIT, async {
        let (phone, inbox, _) = synced_phone(&srv, "R").await;
        let pinger = twin(&srv, &phone);
        let folder = inbox.clone();
        let wait = tokio::spawn(async move { pinger.post("Ping", Some(&ping(30, &[&folder]))).await });
        waiting(&srv, 1).await;
        // Restart Dovecot and deliver before the watcher can have reconnected.
        dovecot.stop();
        dovecot.start_again();
        dovecot.deliver_simple("alice@example.test", "while reconnecting").await;
        let r = tokio::time::timeout(Duration::from_secs(45), wait).await.expect("the Ping hung").unwrap();
        let status = text_of(&r.doc(), tag::ping::STATUS);
        if status != "2" {
            // Not pushed in this Ping: the next Ping's initial check must find it at once.
            let started = Instant::now();
            let r = phone.post("Ping", Some(&ping(30, &[&inbox]))).await.doc();
            assert_eq!(text_of(&r, tag::ping::STATUS), "2", "the message was lost");
            assert!(started.elapsed() < Duration::from_secs(10));
        } else {
            assert_eq!(ping_folders(&r.doc()), vec![inbox]);
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out; Dovecot said:\n{}", dovecot.log()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_passwords_are_refused_and_pooled_connections_are_bounded() {
    let Some((dovecot, srv)) = setup("imap_e2e::auth_and_pool", false, |c| c.imap.max_connections_per_user = 2).await else { return };
    tokio::time::timeout(LIMIT, async {
        let mut phone = srv.phone("alice", "W");
        phone.password = "wrong".into();
        let fs = Element::new(tag::folder_hierarchy::FOLDER_SYNC).with_text(tag::folder_hierarchy::SYNC_KEY, "0");
        assert_eq!(phone.post("FolderSync", Some(&fs)).await.status, http::StatusCode::UNAUTHORIZED);
        // Many concurrent operations share at most two pooled connections (plus none for the
        // watcher: nobody waits).
        let mb = alice_mailbox(&srv).await;
        let drafts = folder_with_role(&mb.folders().await.unwrap(), SpecialUse::Drafts).unwrap().id.clone();
        let mut tasks = Vec::new();
        for i in 0..10 {
            let mb = mb.clone();
            let drafts = drafts.clone();
            tasks.push(tokio::spawn(async move {
                let uid = mb.append(&drafts, &message("alice@example.test", &format!("d{i}"), "x"), Flags::DRAFT, None).await.unwrap();
                mb.set_flags(&drafts, &[uid], &FlagChange { add: Flags::SEEN, ..Default::default() }).await.unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let imap = srv.app().imap.as_ref().unwrap();
        assert!(imap.open_connections() <= 3, "{} connections", imap.open_connections());
        assert_eq!(mb.all_uids(&drafts).await.unwrap().len(), 10);
    })
    .await
    .unwrap_or_else(|_| panic!("timed out; Dovecot said:\n{}", dovecot.log()));
}

fn store_for(url: &str, tweak: impl FnOnce(&mut pushsync::config::ImapSettings)) -> pushsync::store::imap::ImapStore {
    let mut settings = pushsync::config::ImapSettings { operation_timeout_secs: 10, ..Default::default() };
    tweak(&mut settings);
    pushsync::store::imap::ImapStore::from_config(url, &settings, 1 << 20).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_by_starttls_and_imaps_with_certificates_checked() {
    use pushsync::store::{MailStore, StoreError};
    let Some(dovecot) = Dovecot::start_with("imap_e2e::tls", DovecotOptions { tls: true, ..Default::default() }) else { return };
    dovecot.add_user("alice", PASSWORD);
    tokio::time::timeout(LIMIT, async {
        let ca = dovecot.ca_file();
        for url in [dovecot.imaps_url(), dovecot.url()] {
            // Trusted through imap.ca_file: implicit TLS, and STARTTLS on imap://.
            let store = store_for(&url, |s| s.ca_file = Some(ca.clone()));
            let account = store.authenticate("alice", PASSWORD).await.unwrap().unwrap_or_else(|| panic!("{url}: login"));
            let mb = store.mailbox(&account, Origin::Server).await.unwrap();
            assert!(folder_with_role(&mb.folders().await.unwrap(), SpecialUse::Inbox).is_some());
            // Not trusted: refused, as a transient store failure (never a wrong password).
            let store = store_for(&url, |_| {});
            assert!(
                matches!(store.authenticate("alice", PASSWORD).await, Err(StoreError::Unavailable(_))),
                "{url}: unverified certificate accepted"
            );
            // Verification off (test servers only).
            let store = store_for(&url, |s| s.verify_certificates = false);
            assert!(store.authenticate("alice", PASSWORD).await.unwrap().is_some());
        }
        let log = dovecot.log();
        assert!(log.contains("TLS"), "Dovecot saw no TLS logins:\n{log}");
    })
    .await
    .unwrap_or_else(|_| panic!("timed out; Dovecot said:\n{}", dovecot.log()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_user_logs_in_pooled_connections_and_idle_ones_close() {
    use pushsync::store::MailStore;
    let opts = DovecotOptions { master: Some(("pushsync".into(), "master secret".into())), ..Default::default() };
    let Some(dovecot) = Dovecot::start_with("imap_e2e::master_user", opts) else { return };
    dovecot.add_user("alice", PASSWORD);
    tokio::time::timeout(LIMIT, async {
        let store = store_for(&dovecot.url(), |s| {
            s.master_user = Some("pushsync".into());
            s.master_password = Some("master secret".into());
            s.idle_secs = 1;
        });
        // The device's own password is still what authenticates it.
        assert!(store.authenticate("alice", "wrong").await.unwrap().is_none());
        let mut account = store.authenticate("alice", PASSWORD).await.unwrap().expect("alice");
        // Mailbox connections need no password of the user's: the master user's serves.
        account.secret = None;
        let mb = store.mailbox(&account, Origin::Server).await.unwrap();
        let inbox = folder_with_role(&mb.folders().await.unwrap(), SpecialUse::Inbox).unwrap().id.clone();
        mb.append(&inbox, &message("alice@example.test", "via master", "x"), Flags::NONE, None).await.unwrap();
        assert!(dovecot.log().contains("alice*pushsync") || dovecot.log().contains("master"), "{}", dovecot.log());
        assert!(store.open_connections() >= 1);
        // Idle pooled connections are closed after imap.idle_secs.
        let deadline = Instant::now() + Duration::from_secs(10);
        while store.open_connections() > 0 {
            assert!(Instant::now() < deadline, "{} connections still open", store.open_connections());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // A change feed keeps one watcher connection while someone holds it.
        let feed = store.watch(&account).await.unwrap();
        assert_eq!(store.watched_users(), 1);
        assert_eq!(store.open_connections(), 1);
        drop(feed);
        let deadline = Instant::now() + Duration::from_secs(10);
        while store.open_connections() > 0 || store.watched_users() > 0 {
            assert!(Instant::now() < deadline, "the watcher outlived its feed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Without a master user and without the password, there is nothing to log in with.
        let plain = store_for(&dovecot.url(), |_| {});
        let r = plain.mailbox(&account, Origin::Server).await;
        assert!(r.is_err());
    })
    .await
    .unwrap_or_else(|_| panic!("timed out; Dovecot said:\n{}", dovecot.log()));
}

/// Syncs until the server has nothing more; returns the new key and every (command, id).
async fn sync_all(phone: &Phone, collection_id: &str, mut key: String, window: usize) -> (String, Vec<(String, String)>) {
    let mut all = Vec::new();
    for _ in 0..50 {
        let r = phone.post("Sync", Some(&sync_request(collection_id, &key, window, vec![]))).await;
        if r.body.is_empty() {
            return (key, all);
        }
        let doc = r.doc();
        let c = collection(&doc);
        assert_eq!(text_of(c, tag::air_sync::STATUS), "1", "{}", pushsync::wbxml::to_xml(&doc));
        key = text_of(c, tag::air_sync::SYNC_KEY);
        let cmds = commands(c);
        let more = c.child(tag::air_sync::MORE_AVAILABLE).is_some();
        all.extend(cmds);
        if !more {
            return (key, all);
        }
    }
    panic!("the sync never ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_condstore_qresync_move_uidplus_or_notify_a_phone_still_syncs_and_gets_pushed() {
    let Some((dovecot, srv)) = setup("imap_e2e::plain_imap", false, |c| {
        c.imap.disable_extensions =
            ["CONDSTORE", "QRESYNC", "MOVE", "UIDPLUS", "NOTIFY", "SPECIAL-USE", "LIST-STATUS", "LITERAL+", "ESEARCH"]
                .map(String::from)
                .to_vec();
    })
    .await
    else {
        return;
    };
    tokio::time::timeout(LIMIT, async {
        for i in 0..3 {
            dovecot.deliver_simple("alice@example.test", &format!("plain {i}")).await;
        }
        let mut phone = srv.phone("alice", "PLAIN");
        let folders = phone.setup().await;
        for t in ["2", "3", "4", "5"] {
            assert!(folders.iter().any(|(_, _, ty)| ty == t), "roles by name: type {t} missing from {folders:?}");
        }
        let inbox = folders.iter().find(|(_, _, t)| t == "2").unwrap().1.clone();
        let r = phone.post("Sync", Some(&sync_request(&inbox, "0", 2, vec![]))).await.doc();
        let (key, cmds) = sync_all(&phone, &inbox, text_of(collection(&r), tag::air_sync::SYNC_KEY), 2).await;
        let ids: Vec<String> = cmds.iter().filter(|(c, _)| c == "Add").map(|(_, id)| id.clone()).collect();
        assert_eq!(ids.len(), 3, "{cmds:?}");
        let uid = |id: &str| id.rsplit_once(':').unwrap().1.parse::<u32>().unwrap();

        // Another client flags one message and expunges another: a UID/FLAGS scan finds both.
        let mb = alice_mailbox(&srv).await;
        let imap_inbox = FolderId("INBOX".into());
        mb.set_flags(&imap_inbox, &[uid(&ids[0])], &FlagChange { add: Flags::FLAGGED, ..Default::default() }).await.unwrap();
        mb.expunge(&imap_inbox, &[uid(&ids[1])]).await.unwrap();
        let (key, cmds) = sync_all(&phone, &inbox, key, 100).await;
        assert!(cmds.contains(&("Change".to_string(), ids[0].clone())), "{cmds:?}");
        assert!(cmds.contains(&("Delete".to_string(), ids[1].clone())), "{cmds:?}");
        let (key, cmds) = sync_all(&phone, &inbox, key, 100).await;
        assert!(cmds.is_empty(), "nothing twice: {cmds:?}");

        // The phone deletes the third: moved to Trash by COPY, STORE \Deleted, EXPUNGE.
        let delete = Element::new(tag::air_sync::COMMANDS)
            .with(Element::new(tag::air_sync::DELETE).with_text(tag::air_sync::SERVER_ID, ids[2].clone()));
        let r = phone.post("Sync", Some(&sync_request(&inbox, &key, 100, vec![delete]))).await.doc();
        assert_eq!(text_of(collection(&r), tag::air_sync::STATUS), "1");
        let key = text_of(collection(&r), tag::air_sync::SYNC_KEY);
        assert_eq!(mb.all_uids(&imap_inbox).await.unwrap(), vec![uid(&ids[0])]);
        assert_eq!(mb.all_uids(&FolderId("Trash".into())).await.unwrap().len(), 1);
        let (_, cmds) = sync_all(&phone, &inbox, key, 100).await;
        assert!(cmds.is_empty(), "the phone's own delete is not sent back: {cmds:?}");
    })
    .await
    .unwrap_or_else(|_| panic!("timed out; Dovecot said:\n{}", dovecot.log()));
    // Push through IDLE alone.
    let took = tokio::time::timeout(LIMIT, delivery_answers_ping(&dovecot, &srv))
        .await
        .unwrap_or_else(|_| panic!("timed out:\n{}", dovecot.log()));
    eprintln!("IDLE-only push took {took:?}");
}
