//! Mail sync as real phones do it, through the real server: account setup, windows,
//! retries, restarts, a second device, client changes, estimates, item operations, bad input.

mod common;

use std::collections::BTreeSet;
use std::time::Instant;

use bytes::Bytes;
use common::*;
use http::StatusCode;
use pushsync::wbxml::{Element, tag};

/// Syncs a collection to the end; returns every ServerId added and the final key.
async fn sync_all(phone: &Phone, collection: &str, mut key: String, window: usize) -> (Vec<String>, String) {
    let mut added = Vec::new();
    for _ in 0..10_000 {
        let r = phone.post("Sync", Some(&sync_request(collection, &key, window, vec![]))).await;
        if r.body.is_empty() {
            return (added, key);
        }
        let doc = r.doc();
        let c = collection_of(&doc);
        assert_eq!(text_of(c, tag::air_sync::STATUS), "1", "{}", pushsync::wbxml::to_xml(&doc));
        let cmds = commands(c);
        assert!(cmds.len() <= window, "window of {window} exceeded: {}", cmds.len());
        added.extend(cmds.iter().filter(|(k, _)| k == "Add").map(|(_, s)| s.clone()));
        key = text_of(c, tag::air_sync::SYNC_KEY);
        if c.child(tag::air_sync::MORE_AVAILABLE).is_none() && cmds.is_empty() {
            return (added, key);
        }
    }
    panic!("sync did not converge");
}

fn collection_of(doc: &Element) -> &Element {
    collection(doc)
}

async fn bootstrap(phone: &Phone, collection: &str) -> String {
    let r = phone.post("Sync", Some(&sync_request(collection, "0", 100, vec![]))).await.doc();
    let c = collection_of(&r);
    assert_eq!(text_of(c, tag::air_sync::STATUS), "1");
    assert!(c.child(tag::air_sync::COMMANDS).is_none(), "SyncKey 0 returns no items");
    text_of(c, tag::air_sync::SYNC_KEY)
}

#[tokio::test]
async fn account_setup_as_a_phone_does_it() {
    let srv = TestServer::start().await;
    srv.add_user("alice").await;
    for i in 0..5 {
        srv.deliver("alice@example.test", &format!("Message {i}")).await;
    }
    let mut phone = srv.phone("alice", "IPHONE1");
    let folders = phone.setup().await;
    let types: BTreeSet<&str> = folders.iter().map(|(_, _, t)| t.as_str()).collect();
    for t in ["2", "3", "4", "5", "12"] {
        assert!(types.contains(t), "folder type {t} missing: {folders:?}");
    }
    let inbox = folders.iter().find(|(_, _, t)| t == "2").unwrap().1.clone();
    let key = bootstrap(&phone, &inbox).await;

    // First window of 2: the two newest, MoreAvailable.
    let r = phone.post("Sync", Some(&sync_request(&inbox, &key, 2, vec![body_preference("1", Some(200))]))).await.doc();
    let c = collection_of(&r);
    let cmds = commands(c);
    assert_eq!(cmds.len(), 2);
    assert!(c.child(tag::air_sync::MORE_AVAILABLE).is_some());
    let first = c.child(tag::air_sync::COMMANDS).unwrap().child(tag::air_sync::ADD).unwrap();
    let data = first.child(tag::air_sync::APPLICATION_DATA).unwrap();
    assert_eq!(text_of(data, tag::email::SUBJECT), "Message 4", "newest first");
    assert_eq!(text_of(data, tag::email::READ), "0");
    assert!(text_of(data.child(tag::air_sync_base::BODY).unwrap(), tag::air_sync_base::DATA).contains("Hello from the tests."));
    let key = text_of(c, tag::air_sync::SYNC_KEY);
    let (rest, _) = sync_all(&phone, &inbox, key, 2).await;
    assert_eq!(rest.len(), 3);
}

#[tokio::test]
async fn a_lost_response_is_answered_again_and_the_old_key_then_dies() {
    let srv = TestServer::start().await;
    srv.add_user("alice").await;
    for i in 0..3 {
        srv.deliver("alice@example.test", &format!("M{i}")).await;
    }
    let mut phone = srv.phone("alice", "P1");
    let inbox = phone.folder_id("2").await;
    let key = bootstrap(&phone, &inbox).await;
    let req = sync_request(&inbox, &key, 100, vec![]);
    let lost = phone.post("Sync", Some(&req)).await.doc();
    let again = phone.post("Sync", Some(&req)).await.doc();
    assert_eq!(commands(collection_of(&lost)), commands(collection_of(&again)), "same adds, no duplicates");
    let next = text_of(collection_of(&again), tag::air_sync::SYNC_KEY);
    let r = phone.post("Sync", Some(&sync_request(&inbox, &next, 100, vec![]))).await;
    assert!(r.body.is_empty(), "nothing more: the empty response");
    let stale = phone.post("Sync", Some(&req)).await.doc();
    assert_eq!(text_of(collection_of(&stale), tag::air_sync::STATUS), "3", "a key older than the confirmed one is invalid");
}

#[tokio::test]
async fn restarts_and_a_second_device_never_force_a_resync() {
    let mut srv = TestServer::start().await;
    srv.add_user("alice").await;
    for i in 0..4 {
        srv.deliver("alice@example.test", &format!("M{i}")).await;
    }
    let mut a = srv.phone("alice", "A");
    let inbox = a.folder_id("2").await;
    let key = bootstrap(&a, &inbox).await;
    let (added, key) = sync_all(&a, &inbox, key, 3).await;
    assert_eq!(added.len(), 4);

    srv.restart().await;
    a.addr = srv.addr;
    srv.deliver("alice@example.test", "after restart").await;
    let r = a.post("Sync", Some(&sync_request(&inbox, &key, 100, vec![]))).await.doc();
    let c = collection_of(&r);
    assert_eq!(text_of(c, tag::air_sync::STATUS), "1", "keys survive a restart");
    assert_eq!(commands(c).len(), 1);

    let mut b = srv.phone("alice", "B");
    let inbox_b = b.folder_id("2").await;
    assert_eq!(inbox_b, inbox, "collection ids are per user, not per device");
    let key_b = bootstrap(&b, &inbox_b).await;
    let (added_b, _) = sync_all(&b, &inbox_b, key_b, 2).await;
    assert_eq!(added_b.len(), 5);
}

#[tokio::test]
async fn a_ten_thousand_message_folder_syncs_window_by_window() {
    let srv = TestServer::start().await;
    srv.add_user("alice").await;
    let store = srv.app().embedded.clone().unwrap();
    for i in 0..10_000 {
        store.deliver("alice@example.test", &message("alice@example.test", &format!("Bulk {i}"), "x")).await.unwrap();
    }
    let mut phone = srv.phone("alice", "BIG");
    let inbox = phone.folder_id("2").await;
    let key = bootstrap(&phone, &inbox).await;
    let started = Instant::now();
    let (added, _) = sync_all(&phone, &inbox, key, 512).await;
    let unique: BTreeSet<&String> = added.iter().collect();
    assert_eq!(added.len(), 10_000);
    assert_eq!(unique.len(), 10_000, "no duplicates");
    eprintln!("initial sync of 10,000 messages in windows of 512: {:?} (debug build)", started.elapsed());
}

#[tokio::test]
async fn client_changes_reach_the_store_and_other_devices_but_are_not_echoed() {
    let srv = TestServer::start().await;
    srv.add_user("alice").await;
    srv.deliver("alice@example.test", "one").await;
    srv.deliver("alice@example.test", "two").await;
    let mut a = srv.phone("alice", "A");
    let mut b = srv.phone("alice", "B");
    let inbox = a.folder_id("2").await;
    b.folder_id("2").await;
    let (ka, kb) = (bootstrap(&a, &inbox).await, bootstrap(&b, &inbox).await);
    let (items, ka) = sync_all(&a, &inbox, ka, 100).await;
    let (_, kb) = sync_all(&b, &inbox, kb, 100).await;

    // A marks the first read and flags it, deletes the second.
    let change = Element::new(tag::air_sync::CHANGE).with_text(tag::air_sync::SERVER_ID, items[0].clone()).with(
        Element::new(tag::air_sync::APPLICATION_DATA)
            .with_text(tag::email::READ, "1")
            .with(Element::new(tag::email::FLAG).with_text(tag::email::STATUS, "2")),
    );
    let delete = Element::new(tag::air_sync::DELETE).with_text(tag::air_sync::SERVER_ID, items[1].clone());
    let commands_el = Element::new(tag::air_sync::COMMANDS).with(change).with(delete);
    let r = a.post("Sync", Some(&sync_request(&inbox, &ka, 100, vec![commands_el]))).await.doc();
    let c = collection_of(&r);
    assert_eq!(text_of(c, tag::air_sync::STATUS), "1");
    assert!(commands(c).is_empty(), "A's own changes are not echoed back: {}", pushsync::wbxml::to_xml(&r));

    // B sees both.
    let r = b.post("Sync", Some(&sync_request(&inbox, &kb, 100, vec![]))).await.doc();
    let mut seen = commands(collection_of(&r));
    seen.sort();
    assert_eq!(seen, vec![("Change".to_string(), items[0].clone()), ("Delete".to_string(), items[1].clone())]);
    let change = collection_of(&r).child(tag::air_sync::COMMANDS).unwrap().child(tag::air_sync::CHANGE).unwrap();
    let data = change.child(tag::air_sync::APPLICATION_DATA).unwrap();
    assert_eq!(text_of(data, tag::email::READ), "1");
    assert_eq!(data.child(tag::email::FLAG).unwrap().child_text(tag::email::STATUS).as_deref(), Some("2"));

    // The delete was a move to Deleted Items (DeletesAsMoves defaults to on).
    a.folder_key = "0".into();
    let trash = folders_of(&a.folder_sync().await).into_iter().find(|(_, _, t)| t == "4").unwrap().1;
    let kt = bootstrap(&a, &trash).await;
    let (in_trash, _) = sync_all(&a, &trash, kt, 100).await;
    assert_eq!(in_trash.len(), 1);
}

#[tokio::test]
async fn fetch_estimate_and_empty_requests() {
    let srv = TestServer::start().await;
    srv.add_user("alice").await;
    for i in 0..3 {
        srv.deliver("alice@example.test", &format!("E{i}")).await;
    }
    let mut phone = srv.phone("alice", "P");
    let inbox = phone.folder_id("2").await;

    let estimate = |key: &str| {
        Element::new(tag::get_item_estimate::GET_ITEM_ESTIMATE).with(
            Element::new(tag::get_item_estimate::COLLECTIONS).with(
                Element::new(tag::get_item_estimate::COLLECTION)
                    .with_text(tag::air_sync::SYNC_KEY, key)
                    .with_text(tag::get_item_estimate::COLLECTION_ID, inbox.clone()),
            ),
        )
    };
    let r = phone.post("GetItemEstimate", Some(&estimate("0"))).await.doc();
    assert_eq!(r.child(tag::get_item_estimate::RESPONSE).unwrap().child_text(tag::get_item_estimate::STATUS).as_deref(), Some("3"));
    let key = bootstrap(&phone, &inbox).await;
    let r = phone.post("GetItemEstimate", Some(&estimate(&key))).await.doc();
    let resp = r.child(tag::get_item_estimate::RESPONSE).unwrap();
    assert_eq!(resp.child_text(tag::get_item_estimate::STATUS).as_deref(), Some("1"));
    assert_eq!(resp.child(tag::get_item_estimate::COLLECTION).unwrap().child_text(tag::get_item_estimate::ESTIMATE).as_deref(), Some("3"));
    let r = phone.post("GetItemEstimate", Some(&estimate("{00000000}9"))).await.doc();
    assert_eq!(r.child(tag::get_item_estimate::RESPONSE).unwrap().child_text(tag::get_item_estimate::STATUS).as_deref(), Some("4"));

    let (items, key) = sync_all(&phone, &inbox, key, 100).await;
    // Fetch one item in full.
    let fetch = Element::new(tag::air_sync::COMMANDS)
        .with(Element::new(tag::air_sync::FETCH).with_text(tag::air_sync::SERVER_ID, items[0].clone()));
    let r = phone.post("Sync", Some(&sync_request(&inbox, &key, 100, vec![fetch]))).await.doc();
    let responses = collection_of(&r).child(tag::air_sync::RESPONSES).expect("Responses");
    let fetched = responses.child(tag::air_sync::FETCH).unwrap();
    assert_eq!(text_of(fetched, tag::air_sync::STATUS), "1");
    assert!(fetched.child(tag::air_sync::APPLICATION_DATA).is_some());
    let key = text_of(collection_of(&r), tag::air_sync::SYNC_KEY);

    // A full request with no changes: the empty response; then the empty request reuses it.
    let r = phone.post("Sync", Some(&sync_request(&inbox, &key, 100, vec![]))).await;
    assert_eq!((r.status, r.body.len()), (StatusCode::OK, 0));
    srv.deliver("alice@example.test", "new").await;
    let r = phone.post("Sync", None).await.doc();
    assert_eq!(commands(collection_of(&r)).len(), 1, "the cached request found the new message");
}

#[tokio::test]
async fn bad_sync_input_gets_the_protocol_statuses() {
    let srv = TestServer::start().await;
    srv.add_user("alice").await;
    let mut phone = srv.phone("alice", "P");
    let inbox = phone.folder_id("2").await;
    let r = phone.post("Sync", Some(&sync_request(&inbox, "garbage", 10, vec![]))).await.doc();
    assert_eq!(text_of(collection_of(&r), tag::air_sync::STATUS), "3");
    let r = phone.post("Sync", Some(&sync_request("9999", "0", 10, vec![]))).await.doc();
    assert_eq!(text_of(collection_of(&r), tag::air_sync::STATUS), "12");
    let no_key = Element::new(tag::air_sync::SYNC).with(
        Element::new(tag::air_sync::COLLECTIONS)
            .with(Element::new(tag::air_sync::COLLECTION).with_text(tag::air_sync::COLLECTION_ID, inbox.clone())),
    );
    assert_eq!(phone.post("Sync", Some(&no_key)).await.status_code().as_deref(), Some("4"));
    // An empty request with nothing cached: incomplete request.
    let mut fresh = srv.phone("alice", "FRESH");
    fresh.provision().await;
    assert_eq!(fresh.post("Sync", None).await.status_code().as_deref(), Some("13"));
    // Changes to unknown items answer per item.
    let key = bootstrap(&phone, &inbox).await;
    let bogus = Element::new(tag::air_sync::COMMANDS).with(
        Element::new(tag::air_sync::CHANGE)
            .with_text(tag::air_sync::SERVER_ID, format!("{inbox}:424242"))
            .with(Element::new(tag::air_sync::APPLICATION_DATA).with_text(tag::email::READ, "1")),
    );
    let r = phone.post("Sync", Some(&sync_request(&inbox, &key, 10, vec![bogus]))).await.doc();
    let resp = collection_of(&r).child(tag::air_sync::RESPONSES).unwrap().child(tag::air_sync::CHANGE).unwrap();
    assert_eq!(text_of(resp, tag::air_sync::STATUS), "8");
}

#[tokio::test]
async fn folder_sync_zero_does_not_break_item_keys() {
    let srv = TestServer::start().await;
    srv.add_user("alice").await;
    srv.deliver("alice@example.test", "x").await;
    let mut phone = srv.phone("alice", "P");
    let inbox = phone.folder_id("2").await;
    let key = bootstrap(&phone, &inbox).await;
    let (_, key) = sync_all(&phone, &inbox, key, 10).await;
    phone.folder_key = "0".into();
    let again = phone.folder_sync().await;
    assert!(folders_of(&again).len() >= 5);
    srv.deliver("alice@example.test", "y").await;
    let r = phone.post("Sync", Some(&sync_request(&inbox, &key, 10, vec![]))).await.doc();
    assert_eq!(text_of(collection_of(&r), tag::air_sync::STATUS), "1");
    assert_eq!(commands(collection_of(&r)).len(), 1);
    // Hierarchy deltas by key.
    let unchanged = phone.folder_sync().await;
    assert_eq!(unchanged.child(tag::folder_hierarchy::CHANGES).unwrap().child_text(tag::folder_hierarchy::COUNT).as_deref(), Some("0"));
    let bad = Element::new(tag::folder_hierarchy::FOLDER_SYNC).with_text(tag::folder_hierarchy::SYNC_KEY, "77");
    assert_eq!(phone.post("FolderSync", Some(&bad)).await.status_code().as_deref(), Some("9"));
}

#[tokio::test]
async fn item_operations_fetch_items_and_attachments() {
    let srv = TestServer::start().await;
    srv.add_user("alice").await;
    let raw = b"From: bob@example.test\r\nTo: alice@example.test\r\nSubject: With file\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n--b\r\nContent-Type: application/octet-stream; name=\"data.bin\"\r\nContent-Disposition: attachment; filename=\"data.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\nAAECAwQFBgcICQ==\r\n--b--\r\n";
    srv.deliver_raw("alice@example.test", raw).await;
    let mut phone = srv.phone("alice", "P");
    let inbox = phone.folder_id("2").await;
    let key = bootstrap(&phone, &inbox).await;
    let r = phone.post("Sync", Some(&sync_request(&inbox, &key, 10, vec![]))).await.doc();
    let add = collection_of(&r).child(tag::air_sync::COMMANDS).unwrap().child(tag::air_sync::ADD).unwrap();
    let server_id = text_of(add, tag::air_sync::SERVER_ID);
    let att = add
        .child(tag::air_sync::APPLICATION_DATA)
        .and_then(|d| d.child(tag::air_sync_base::ATTACHMENTS))
        .and_then(|a| a.child(tag::air_sync_base::ATTACHMENT))
        .expect("attachment listed");
    let file_ref = text_of(att, tag::air_sync_base::FILE_REFERENCE);
    assert_eq!(text_of(att, tag::air_sync_base::DISPLAY_NAME), "data.bin");

    let fetch_att = Element::new(tag::item_operations::ITEM_OPERATIONS).with(
        Element::new(tag::item_operations::FETCH)
            .with_text(tag::item_operations::STORE, "Mailbox")
            .with_text(tag::air_sync_base::FILE_REFERENCE, file_ref.clone()),
    );
    let r = phone.post("ItemOperations", Some(&fetch_att)).await.doc();
    let fetch = r.child(tag::item_operations::RESPONSE).unwrap().child(tag::item_operations::FETCH).unwrap();
    assert_eq!(text_of(fetch, tag::item_operations::STATUS), "1");
    let data = text_of(fetch.child(tag::item_operations::PROPERTIES).unwrap(), tag::item_operations::DATA);
    assert_eq!(data, "AAECAwQFBgcICQ==");

    // Multipart: the attachment as a binary part.
    let multipart = phone
        .raw(
            http::Method::POST,
            "?Cmd=ItemOperations&User=alice&DeviceId=P&DeviceType=iPhone",
            &[
                ("Authorization", phone.auth_header()),
                ("MS-ASProtocolVersion", "16.1".into()),
                ("X-MS-PolicyKey", phone.policy_key.unwrap().to_string()),
                ("MS-ASAcceptMultiPart", "T".into()),
            ],
            Bytes::from(pushsync::wbxml::encode(&fetch_att)),
        )
        .await;
    assert_eq!(multipart.headers["Content-Type"], "application/vnd.ms-sync.multipart");
    let body = &multipart.body;
    let int = |i: usize| i32::from_le_bytes(body[i..i + 4].try_into().unwrap()) as usize;
    assert_eq!(int(0), 2);
    let (off, len) = (int(12), int(16));
    assert_eq!(&body[off..off + len], &[0u8, 1, 2, 3, 4, 5, 6, 7, 8, 9]);

    // The item itself, as MIME.
    let fetch_item = Element::new(tag::item_operations::ITEM_OPERATIONS).with(
        Element::new(tag::item_operations::FETCH)
            .with_text(tag::item_operations::STORE, "Mailbox")
            .with_text(tag::air_sync::COLLECTION_ID, inbox.clone())
            .with_text(tag::air_sync::SERVER_ID, server_id.clone())
            .with(
                Element::new(tag::item_operations::OPTIONS)
                    .with(Element::new(tag::air_sync_base::BODY_PREFERENCE).with_text(tag::air_sync_base::TYPE, "4")),
            ),
    );
    let r = phone.post("ItemOperations", Some(&fetch_item)).await.doc();
    let props = r
        .child(tag::item_operations::RESPONSE)
        .unwrap()
        .child(tag::item_operations::FETCH)
        .unwrap()
        .child(tag::item_operations::PROPERTIES)
        .unwrap();
    let body = props.child(tag::air_sync_base::BODY).unwrap();
    assert_eq!(text_of(body, tag::air_sync_base::TYPE), "4");
    assert!(text_of(body, tag::air_sync_base::DATA).contains("Subject: With file"));

    // A ServerId of another folder under the Inbox's CollectionId names nothing, even though
    // the Inbox has a message with that number.
    let uid = server_id.rsplit_once(':').unwrap().1;
    let mismatched = Element::new(tag::item_operations::ITEM_OPERATIONS).with(
        Element::new(tag::item_operations::FETCH)
            .with_text(tag::item_operations::STORE, "Mailbox")
            .with_text(tag::air_sync::COLLECTION_ID, inbox.clone())
            .with_text(tag::air_sync::SERVER_ID, format!("{inbox}9:{uid}")),
    );
    let r = phone.post("ItemOperations", Some(&mismatched)).await.doc();
    assert_eq!(
        text_of(r.child(tag::item_operations::RESPONSE).unwrap().child(tag::item_operations::FETCH).unwrap(), tag::item_operations::STATUS),
        "6"
    );

    // A missing attachment.
    let missing = Element::new(tag::item_operations::ITEM_OPERATIONS).with(
        Element::new(tag::item_operations::FETCH)
            .with_text(tag::item_operations::STORE, "Mailbox")
            .with_text(tag::air_sync_base::FILE_REFERENCE, format!("{inbox}:999:0")),
    );
    let r = phone.post("ItemOperations", Some(&missing)).await.doc();
    assert_eq!(
        text_of(r.child(tag::item_operations::RESPONSE).unwrap().child(tag::item_operations::FETCH).unwrap(), tag::item_operations::STATUS),
        "6"
    );

    // EmptyFolderContents.
    let empty = Element::new(tag::item_operations::ITEM_OPERATIONS)
        .with(Element::new(tag::item_operations::EMPTY_FOLDER_CONTENTS).with_text(tag::air_sync::COLLECTION_ID, inbox.clone()));
    let r = phone.post("ItemOperations", Some(&empty)).await.doc();
    assert_eq!(
        text_of(
            r.child(tag::item_operations::RESPONSE).unwrap().child(tag::item_operations::EMPTY_FOLDER_CONTENTS).unwrap(),
            tag::item_operations::STATUS
        ),
        "1"
    );
    let mb = srv
        .app()
        .store
        .mailbox(&srv.app().embedded.as_ref().unwrap().find_account("alice").await.unwrap().unwrap(), pushsync::store::Origin::Server)
        .await
        .unwrap();
    let inbox_folder = mb.folders().await.unwrap().into_iter().find(|f| f.role == Some(pushsync::store::SpecialUse::Inbox)).unwrap();
    assert_eq!(inbox_folder.status.messages, 0);
}

#[tokio::test]
async fn settings_device_and_user_information() {
    let srv = TestServer::start().await;
    srv.add_user("alice").await;
    let mut phone = srv.phone("alice", "P");
    phone.provision().await;
    let req = Element::new(tag::settings::SETTINGS)
        .with(
            Element::new(tag::settings::DEVICE_INFORMATION)
                .with(Element::new(tag::settings::SET).with_text(tag::settings::MODEL, "Model X").with_text(tag::settings::IMEI, "1234")),
        )
        .with(Element::new(tag::settings::USER_INFORMATION).with(Element::new(tag::settings::GET)));
    let r = phone.post("Settings", Some(&req)).await.doc();
    assert_eq!(text_of(&r, tag::settings::STATUS), "1");
    let ui = r.child(tag::settings::USER_INFORMATION).unwrap();
    let xml = pushsync::wbxml::to_xml(ui);
    assert!(xml.contains("alice@example.test"), "{xml}");
    let device = srv.app().state.device("alice", "P").await.unwrap().unwrap();
    assert_eq!(device.info.model.as_deref(), Some("Model X"));
    assert_eq!(device.info.imei.as_deref(), Some("1234"));
    assert_eq!(device.info.friendly_name.as_deref(), Some("Test phone"), "from Provision's DeviceInformation");
}
