//! Push through the real server: Ping and long-poll Sync woken by deliveries, one waiting
//! request per device, a device's own changes, heartbeat bounds, graceful shutdown.

mod common;

use std::time::{Duration, Instant};

use common::*;
use pushsync::wbxml::{Element, tag};

/// A phone that has synced `collections` to the end (so a Ping waits).
async fn synced_phone(srv: &TestServer, user: &str, device: &str, collections: &[&str]) -> (Phone, Vec<String>) {
    let mut phone = srv.phone(user, device);
    phone.setup().await;
    let mut keys = Vec::new();
    for c in collections {
        let r = phone.post("Sync", Some(&sync_request(c, "0", 100, vec![]))).await.doc();
        let mut key = text_of(collection(&r), tag::air_sync::SYNC_KEY);
        loop {
            let r = phone.post("Sync", Some(&sync_request(c, &key, 100, vec![]))).await;
            if r.body.is_empty() {
                break;
            }
            key = text_of(collection(&r.doc()), tag::air_sync::SYNC_KEY);
        }
        keys.push(key);
    }
    (phone, keys)
}

async fn user_folder(srv: &TestServer, user: &str, name: &str) -> String {
    let app = srv.app();
    let account = app.embedded.as_ref().unwrap().find_account(user).await.unwrap().unwrap();
    let mb = app.store.mailbox(&account, pushsync::store::Origin::Server).await.unwrap();
    let id = mb.create_folder(None, name).await.unwrap();
    app.state.collection_ids(user, &[id]).await.unwrap().remove(0)
}

#[tokio::test]
async fn a_delivery_into_a_watched_folder_answers_the_ping_naming_only_that_folder() {
    let srv = TestServer::start().await;
    srv.add_user("alice").await;
    let lists = user_folder(&srv, "alice", "lists").await;
    let mut probe = srv.phone("alice", "A");
    let inbox = probe.folder_id("2").await;
    let (phone, keys) = synced_phone(&srv, "alice", "A", &[&inbox, &lists]).await;

    let watched = [inbox.clone(), lists.clone()];
    let waiting = tokio::spawn(async move {
        let started = Instant::now();
        let r = phone.post("Ping", Some(&ping(300, &[&watched[0], &watched[1]]))).await.doc();
        (r, started.elapsed(), phone)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // `alice+lists@` files into the "lists" folder.
    srv.deliver("alice+lists@example.test", "for the list").await;
    let (r, waited, phone) = tokio::time::timeout(Duration::from_secs(10), waiting).await.expect("push within seconds").unwrap();
    assert_eq!(text_of(&r, tag::ping::STATUS), "2");
    assert_eq!(ping_folders(&r), vec![lists.clone()], "only the folder that changed");
    assert!(waited < Duration::from_secs(10));

    let s = phone.post("Sync", Some(&sync_request(&lists, &keys[1], 100, vec![]))).await.doc();
    let cmds = commands(collection(&s));
    assert_eq!(cmds.len(), 1, "the following Sync brings it");
}

#[tokio::test]
async fn changes_pending_at_the_start_answer_at_once() {
    let srv = TestServer::start().await;
    srv.add_user("alice").await;
    let mut probe = srv.phone("alice", "A");
    let inbox = probe.folder_id("2").await;
    let (phone, _) = synced_phone(&srv, "alice", "A", &[&inbox]).await;
    srv.deliver("alice@example.test", "while not waiting").await;
    let started = Instant::now();
    let r = phone.post("Ping", Some(&ping(300, &[&inbox]))).await.doc();
    assert_eq!(text_of(&r, tag::ping::STATUS), "2");
    assert_eq!(ping_folders(&r), vec![inbox]);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_second_ping_from_the_same_device_ends_the_first() {
    let srv = TestServer::start().await;
    srv.add_user("alice").await;
    let mut probe = srv.phone("alice", "A");
    let inbox = probe.folder_id("2").await;
    let (phone, _) = synced_phone(&srv, "alice", "A", &[&inbox]).await;
    let phone2 = srv.phone("alice", "A");
    let mut phone2 = phone2;
    phone2.policy_key = phone.policy_key;
    let inbox2 = inbox.clone();
    let first = tokio::spawn(async move { phone.post("Ping", Some(&ping(300, &[&inbox2]))).await.doc() });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let inbox3 = inbox.clone();
    let second = tokio::spawn(async move { phone2.post("Ping", Some(&ping(300, &[&inbox3]))).await.doc() });
    let r = tokio::time::timeout(Duration::from_secs(10), first).await.expect("the first Ping ends").unwrap();
    assert_eq!(text_of(&r, tag::ping::STATUS), "1");
    // The second one is the device's waiting request now: a delivery answers it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    srv.deliver("alice@example.test", "x").await;
    let r = tokio::time::timeout(Duration::from_secs(10), second).await.unwrap().unwrap();
    assert_eq!(text_of(&r, tag::ping::STATUS), "2");
}

#[tokio::test]
async fn a_device_is_not_woken_by_its_own_change_but_others_are() {
    let srv = TestServer::start().await;
    srv.add_user("alice").await;
    srv.deliver("alice@example.test", "to be read").await;
    let mut probe = srv.phone("alice", "A");
    let inbox = probe.folder_id("2").await;
    let (a, keys_a) = synced_phone(&srv, "alice", "A", &[&inbox]).await;
    let (b, _) = synced_phone(&srv, "alice", "B", &[&inbox]).await;
    let a_pinger = {
        let mut p = srv.phone("alice", "A");
        p.policy_key = a.policy_key;
        p
    };
    let (i1, i2) = (inbox.clone(), inbox.clone());
    let a_wait = tokio::spawn(async move { a_pinger.post("Ping", Some(&ping(60, &[&i1]))).await.doc() });
    let b_wait = tokio::spawn(async move { b.post("Ping", Some(&ping(60, &[&i2]))).await.doc() });
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A marks the message read through Sync (on another connection, as iOS does).
    let read = Element::new(tag::air_sync::COMMANDS).with(
        Element::new(tag::air_sync::CHANGE)
            .with_text(tag::air_sync::SERVER_ID, format!("{inbox}:1"))
            .with(Element::new(tag::air_sync::APPLICATION_DATA).with_text(tag::email::READ, "1")),
    );
    let r = a.post("Sync", Some(&sync_request(&inbox, &keys_a[0], 100, vec![read]))).await.doc();
    assert_eq!(text_of(collection(&r), tag::air_sync::STATUS), "1");

    let rb = tokio::time::timeout(Duration::from_secs(10), b_wait).await.expect("B is woken").unwrap();
    assert_eq!(text_of(&rb, tag::ping::STATUS), "2");
    // A's Ping is still waiting two seconds later.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!a_wait.is_finished(), "A's own change woke A");
    a_wait.abort();
}

#[tokio::test]
async fn ping_parameters_are_bounded_and_cached() {
    let srv = TestServer::start_with(|c| {
        c.ping.min_heartbeat_secs = 2;
        c.ping.max_heartbeat_secs = 3540;
        c.ping.max_folders = 3;
    })
    .await;
    srv.add_user("alice").await;
    let mut probe = srv.phone("alice", "A");
    let inbox = probe.folder_id("2").await;
    let (phone, _) = synced_phone(&srv, "alice", "A", &[&inbox]).await;

    let r = phone.post("Ping", None).await.doc();
    assert_eq!(text_of(&r, tag::ping::STATUS), "3", "nothing cached yet");
    let r = phone.post("Ping", Some(&ping(1, &[&inbox]))).await.doc();
    assert_eq!((text_of(&r, tag::ping::STATUS), text_of(&r, tag::ping::HEARTBEAT_INTERVAL)), ("5".into(), "2".into()));
    let r = phone.post("Ping", Some(&ping(4000, &[&inbox]))).await.doc();
    assert_eq!((text_of(&r, tag::ping::STATUS), text_of(&r, tag::ping::HEARTBEAT_INTERVAL)), ("5".into(), "3540".into()));
    let r = phone.post("Ping", Some(&ping(60, &["1", "2", "3", "4"]))).await.doc();
    assert_eq!((text_of(&r, tag::ping::STATUS), text_of(&r, tag::ping::MAX_FOLDERS)), ("6".into(), "3".into()));
    let r = phone.post("Ping", Some(&ping(60, &["98765"]))).await.doc();
    assert_eq!(text_of(&r, tag::ping::STATUS), "7", "an unknown folder needs a FolderSync");
    let malformed = Element::new(tag::ping::PING).with_text(tag::ping::HEARTBEAT_INTERVAL, "soon");
    assert_eq!(phone.post("Ping", Some(&malformed)).await.status_code().as_deref(), Some("4"));

    // The heartbeat expires with Status 1; an empty Ping reuses the cached parameters.
    let started = Instant::now();
    let r = phone.post("Ping", Some(&ping(2, &[&inbox]))).await.doc();
    assert_eq!(text_of(&r, tag::ping::STATUS), "1");
    assert!(started.elapsed() >= Duration::from_secs(2) && started.elapsed() < Duration::from_secs(6), "{:?}", started.elapsed());
    let started = Instant::now();
    let r = phone.post("Ping", None).await.doc();
    assert_eq!(text_of(&r, tag::ping::STATUS), "1");
    assert!(started.elapsed() >= Duration::from_secs(2), "the cached heartbeat was used");
}

#[tokio::test]
async fn a_hierarchy_change_answers_with_status_7() {
    let srv = TestServer::start().await;
    srv.add_user("alice").await;
    let mut probe = srv.phone("alice", "A");
    let inbox = probe.folder_id("2").await;
    let (phone, _) = synced_phone(&srv, "alice", "A", &[&inbox]).await;
    let waiting = tokio::spawn(async move { phone.post("Ping", Some(&ping(300, &[&inbox]))).await.doc() });
    tokio::time::sleep(Duration::from_millis(300)).await;
    user_folder(&srv, "alice", "Projects").await;
    let r = tokio::time::timeout(Duration::from_secs(10), waiting).await.unwrap().unwrap();
    assert_eq!(text_of(&r, tag::ping::STATUS), "7");
}

#[tokio::test]
async fn long_poll_sync_returns_the_change_when_it_arrives() {
    let srv = TestServer::start().await;
    srv.add_user("alice").await;
    let mut probe = srv.phone("alice", "A");
    let inbox = probe.folder_id("2").await;
    let (phone, keys) = synced_phone(&srv, "alice", "A", &[&inbox]).await;
    let mut req = sync_request(&inbox, &keys[0], 100, vec![]);
    req.push_text_child(tag::air_sync::HEARTBEAT_INTERVAL, "120");
    let waiting = tokio::spawn(async move { phone.post("Sync", Some(&req)).await.doc() });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished());
    srv.deliver("alice@example.test", "long poll").await;
    let r = tokio::time::timeout(Duration::from_secs(10), waiting).await.unwrap().unwrap();
    let cmds = commands(collection(&r));
    assert_eq!(cmds.len(), 1);
    assert_eq!(cmds[0].0, "Add");
}

#[tokio::test]
async fn graceful_shutdown_answers_waiting_pings() {
    let mut srv = TestServer::start().await;
    srv.add_user("alice").await;
    let mut probe = srv.phone("alice", "A");
    let inbox = probe.folder_id("2").await;
    let (phone, _) = synced_phone(&srv, "alice", "A", &[&inbox]).await;
    let waiting = tokio::spawn(async move { phone.post("Ping", Some(&ping(600, &[&inbox]))).await.doc() });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    srv.stop().await;
    let r = tokio::time::timeout(Duration::from_secs(5), waiting).await.expect("answered before exit").unwrap();
    assert_eq!(text_of(&r, tag::ping::STATUS), "1");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn metrics_report_pings_and_push_latency() {
    let srv = TestServer::start().await;
    srv.add_user("alice").await;
    let mut probe = srv.phone("alice", "A");
    let inbox = probe.folder_id("2").await;
    let (phone, _) = synced_phone(&srv, "alice", "A", &[&inbox]).await;
    let waiting = tokio::spawn(async move { phone.post("Ping", Some(&ping(300, &[&inbox]))).await.doc() });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, text) = srv.admin_call(http::Method::GET, "/metrics", None, Some("")).await;
    assert!(text.contains("pushsync_waiting_pings 1"), "{text}");
    srv.deliver("alice@example.test", "m").await;
    waiting.await.unwrap();
    let (status, text) = srv.admin_call(http::Method::GET, "/metrics", None, Some("")).await;
    assert_eq!(status, http::StatusCode::OK);
    assert!(text.contains("pushsync_pings_total{outcome=\"changes\"} 1"), "{text}");
    assert!(text.contains("pushsync_push_latency_seconds_count 1"), "{text}");
    assert!(text.contains("pushsync_waiting_pings 0"), "{text}");
    assert!(text.contains("pushsync_http_requests_total{command=\"Ping\",status=\"200\"}"), "{text}");
}
