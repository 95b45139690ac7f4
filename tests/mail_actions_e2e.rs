//! Everything else a phone does with mail, through the real server: send, reply, forward,
//! move, folders, search, find, recipients, out-of-office; and their bad-input statuses.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Method, StatusCode};
use mail_parser::MessageParser;
use pushsync::store::{Origin, SpecialUse};
use pushsync::wbxml::{Element, tag};

async fn messages_in(srv: &TestServer, user: &str, role: SpecialUse) -> Vec<Vec<u8>> {
    let app = srv.app();
    let account = app.embedded.as_ref().unwrap().find_account(user).await.unwrap().unwrap();
    let mb = app.store.mailbox(&account, Origin::Server).await.unwrap();
    let folder = mb.folders().await.unwrap().into_iter().find(|f| f.role == Some(role)).unwrap();
    let mut out = Vec::new();
    for uid in mb.all_uids(&folder.id).await.unwrap() {
        out.push(mb.fetch(&folder.id, uid).await.unwrap().to_vec());
    }
    out
}

fn send_mail(client_id: &str, mime: &[u8], save: bool) -> Element {
    let mut e = Element::new(tag::compose_mail::SEND_MAIL).with_text(tag::compose_mail::CLIENT_ID, client_id);
    if save {
        e.push(Element::new(tag::compose_mail::SAVE_IN_SENT_ITEMS));
    }
    e.with(Element::opaque(tag::compose_mail::MIME, mime.to_vec()))
}

fn compose_status(r: &EasResponse) -> Option<String> {
    if r.body.is_empty() { None } else { r.status_code() }
}

async fn two_users() -> (TestServer, Phone, Phone) {
    let srv = TestServer::start().await;
    srv.add_user("alice").await;
    srv.add_user("bob").await;
    let mut a = srv.phone("alice", "A");
    let mut b = srv.phone("bob", "B");
    a.provision().await;
    b.provision().await;
    (srv, a, b)
}

#[tokio::test]
async fn send_mail_reaches_the_recipient_and_sent_items() {
    let (srv, a, _) = two_users().await;
    let mime = b"From: Mallory <ceo@example.test>\r\nTo: bob@example.test\r\nBcc: alice@example.test\r\nSubject: Hello Bob\r\n\r\nHi!\r\n";
    let r = a.post("SendMail", Some(&send_mail("c1", mime, true))).await;
    assert_eq!((r.status, r.body.len()), (StatusCode::OK, 0), "success is an empty response: {:?}", r.body);

    let inbox = messages_in(&srv, "bob", SpecialUse::Inbox).await;
    assert_eq!(inbox.len(), 1);
    let got = MessageParser::default().parse(&inbox[0]).unwrap();
    assert_eq!(got.subject(), Some("Hello Bob"));
    assert_eq!(got.from().unwrap().first().unwrap().address(), Some("alice@example.test"), "a forged From is rewritten");
    assert!(got.bcc().is_none(), "Bcc is not shown to recipients");
    // The Bcc recipient got it too, and the sender's Sent copy keeps the Bcc.
    assert_eq!(messages_in(&srv, "alice", SpecialUse::Inbox).await.len(), 1);
    let sent = messages_in(&srv, "alice", SpecialUse::Sent).await;
    assert_eq!(sent.len(), 1);
    assert!(MessageParser::default().parse(&sent[0]).unwrap().bcc().is_some());

    // The same ClientId again: already sent.
    let r = a.post("SendMail", Some(&send_mail("c1", mime, true))).await;
    assert_eq!(compose_status(&r).as_deref(), Some("118"));
    assert_eq!(messages_in(&srv, "bob", SpecialUse::Inbox).await.len(), 1, "nothing sent twice");
}

#[tokio::test]
async fn send_mail_bad_input_statuses() {
    let srv = TestServer::start_with(|c| c.mail.max_message_bytes = 2000).await;
    srv.add_user("alice").await;
    let mut a = srv.phone("alice", "A");
    a.provision().await;
    let external = b"To: someone@elsewhere.example\r\nSubject: x\r\n\r\nx\r\n";
    assert_eq!(
        compose_status(&a.post("SendMail", Some(&send_mail("e1", external, false))).await).as_deref(),
        Some("116"),
        "no relay: external refused"
    );
    let nobody = b"Subject: x\r\n\r\nx\r\n";
    assert_eq!(compose_status(&a.post("SendMail", Some(&send_mail("e2", nobody, false))).await).as_deref(), Some("119"));
    assert_eq!(compose_status(&a.post("SendMail", Some(&send_mail("e3", b"", false))).await).as_deref(), Some("107"));
    let big = format!("To: alice@example.test\r\nSubject: big\r\n\r\n{}\r\n", "x".repeat(3000));
    assert_eq!(compose_status(&a.post("SendMail", Some(&send_mail("e4", big.as_bytes(), false))).await).as_deref(), Some("122"));
    let no_mime = Element::new(tag::compose_mail::SEND_MAIL).with_text(tag::compose_mail::CLIENT_ID, "e5");
    assert_eq!(compose_status(&a.post("SendMail", Some(&no_mime)).await).as_deref(), Some("107"));
}

#[tokio::test]
async fn the_12_1_form_sends_raw_mime() {
    let (srv, mut a, _) = two_users().await;
    a.version = "12.1".into();
    a.provision().await;
    let mime = b"To: bob@example.test\r\nSubject: Old phone\r\n\r\nfrom 12.1\r\n";
    let headers = [
        ("Authorization", a.auth_header()),
        ("MS-ASProtocolVersion", "12.1".to_string()),
        ("X-MS-PolicyKey", a.policy_key.unwrap().to_string()),
        ("Content-Type", "message/rfc822".to_string()),
    ];
    let r =
        a.raw(Method::POST, "?Cmd=SendMail&User=alice&DeviceId=A&DeviceType=iPhone&SaveInSent=T", &headers, Bytes::from_static(mime)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(messages_in(&srv, "bob", SpecialUse::Inbox).await.len(), 1);
    assert_eq!(messages_in(&srv, "alice", SpecialUse::Sent).await.len(), 1);
}

/// Delivers `raw` to bob and syncs bob's phone to it; returns (inbox collection, ServerId).
async fn bob_has(srv: &TestServer, b: &mut Phone, raw: &[u8]) -> (String, String) {
    srv.deliver_raw("bob@example.test", raw).await;
    b.folder_key = "0".into();
    let inbox = folders_of(&b.folder_sync().await).into_iter().find(|(_, _, t)| t == "2").unwrap().1;
    let k = text_of(collection(&b.post("Sync", Some(&sync_request(&inbox, "0", 10, vec![]))).await.doc()), tag::air_sync::SYNC_KEY);
    let r = b.post("Sync", Some(&sync_request(&inbox, &k, 10, vec![]))).await.doc();
    let sid = commands(collection(&r))[0].1.clone();
    (inbox, sid)
}

#[tokio::test]
async fn smart_reply_threads_and_smart_forward_attaches() {
    let (srv, _, mut b) = two_users().await;
    let original = b"From: Alice <alice@example.test>\r\nTo: bob@example.test\r\nSubject: Plan\r\nMessage-ID: <plan-1@example.test>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nThe plan is simple.\r\n--b\r\nContent-Type: application/pdf; name=\"plan.pdf\"\r\nContent-Disposition: attachment; filename=\"plan.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--b--\r\n";
    let (inbox, sid) = bob_has(&srv, &mut b, original).await;
    // Bob's tablet holds the original too, and will hear of the reply and the forward.
    let mut tablet = srv.phone("bob", "TABLET");
    tablet.setup().await;
    let k = text_of(collection(&tablet.post("Sync", Some(&sync_request(&inbox, "0", 10, vec![]))).await.doc()), tag::air_sync::SYNC_KEY);
    let tablet_key =
        text_of(collection(&tablet.post("Sync", Some(&sync_request(&inbox, &k, 10, vec![]))).await.doc()), tag::air_sync::SYNC_KEY);

    let reply_mime = b"To: alice@example.test\r\nSubject: Re: Plan\r\n\r\nAgreed.\r\n";
    let reply = Element::new(tag::compose_mail::SMART_REPLY)
        .with_text(tag::compose_mail::CLIENT_ID, "r1")
        .with(
            Element::new(tag::compose_mail::SOURCE)
                .with_text(tag::compose_mail::FOLDER_ID, inbox.clone())
                .with_text(tag::compose_mail::ITEM_ID, sid.clone()),
        )
        .with(Element::new(tag::compose_mail::SAVE_IN_SENT_ITEMS))
        .with(Element::opaque(tag::compose_mail::MIME, reply_mime.to_vec()));
    let r = b.post("SmartReply", Some(&reply)).await;
    assert_eq!((r.status, r.body.len()), (StatusCode::OK, 0), "{:?}", r.body);
    let at_alice = messages_in(&srv, "alice", SpecialUse::Inbox).await;
    let m = MessageParser::default().parse(&at_alice[0]).unwrap();
    assert_eq!(m.in_reply_to().as_text(), Some("plan-1@example.test"), "threads to the original");
    assert!(m.body_text(0).unwrap().contains("> The plan is simple."));
    assert_eq!(m.attachment_count(), 0);

    let fwd_mime = b"To: alice@example.test\r\nSubject: Fw: Plan\r\n\r\nSee below.\r\n";
    let fwd = Element::new(tag::compose_mail::SMART_FORWARD)
        .with_text(tag::compose_mail::CLIENT_ID, "f1")
        .with(
            Element::new(tag::compose_mail::SOURCE)
                .with_text(tag::compose_mail::FOLDER_ID, inbox.clone())
                .with_text(tag::compose_mail::ITEM_ID, sid.clone()),
        )
        .with(Element::opaque(tag::compose_mail::MIME, fwd_mime.to_vec()));
    let r = b.post("SmartForward", Some(&fwd)).await;
    assert_eq!(r.status, StatusCode::OK);
    let at_alice = messages_in(&srv, "alice", SpecialUse::Inbox).await;
    let f = MessageParser::default().parse(&at_alice[1]).unwrap();
    assert_eq!(f.attachment_count(), 1);
    assert_eq!(f.attachment(0).unwrap().contents(), b"%PDF-1.4\n");

    // The original now carries \Answered and $Forwarded: the next Sync shows the verb.
    let app = srv.app();
    let account = app.embedded.as_ref().unwrap().find_account("bob").await.unwrap().unwrap();
    let mb = app.store.mailbox(&account, Origin::Server).await.unwrap();
    let folder = mb.folders().await.unwrap().into_iter().find(|f| f.role == Some(SpecialUse::Inbox)).unwrap();
    let state = mb.message_states(&folder.id, &[1]).await.unwrap().remove(0);
    assert!(state.flags.contains(pushsync::store::Flags::ANSWERED) && state.flags.contains(pushsync::store::Flags::FORWARDED));
    let r = tablet.post("Sync", Some(&sync_request(&inbox, &tablet_key, 10, vec![]))).await.doc();
    let changes = collection(&r).child(tag::air_sync::COMMANDS).expect("the tablet gets a Change").children_with(tag::air_sync::CHANGE);
    let change =
        changes.into_iter().find(|c| c.child_text(tag::air_sync::SERVER_ID).as_deref() == Some(sid.as_str())).expect("of the original");
    assert_eq!(text_of(change.child(tag::air_sync::APPLICATION_DATA).unwrap(), tag::email2::LAST_VERB_EXECUTED), "3", "forwarded last");

    // A missing original.
    let missing = Element::new(tag::compose_mail::SMART_REPLY)
        .with_text(tag::compose_mail::CLIENT_ID, "r2")
        .with(
            Element::new(tag::compose_mail::SOURCE)
                .with_text(tag::compose_mail::FOLDER_ID, inbox.clone())
                .with_text(tag::compose_mail::ITEM_ID, format!("{inbox}:999")),
        )
        .with(Element::opaque(tag::compose_mail::MIME, reply_mime.to_vec()));
    assert_eq!(compose_status(&b.post("SmartReply", Some(&missing)).await).as_deref(), Some("150"));

    // An ItemId of another folder under the Inbox's FolderId names nothing, though the Inbox
    // has a message with that number.
    let uid = sid.rsplit_once(':').unwrap().1;
    let mismatched = Element::new(tag::compose_mail::SMART_REPLY)
        .with_text(tag::compose_mail::CLIENT_ID, "r3")
        .with(
            Element::new(tag::compose_mail::SOURCE)
                .with_text(tag::compose_mail::FOLDER_ID, inbox.clone())
                .with_text(tag::compose_mail::ITEM_ID, format!("{inbox}9:{uid}")),
        )
        .with(Element::opaque(tag::compose_mail::MIME, reply_mime.to_vec()));
    assert_eq!(compose_status(&b.post("SmartReply", Some(&mismatched)).await).as_deref(), Some("150"));
}

#[tokio::test]
async fn sending_through_an_smtp_relay() {
    // A minimal SMTP server that records what it receives.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let received = std::sync::Arc::new(tokio::sync::Mutex::new(Vec::<(Vec<String>, String)>::new()));
    let sink = received.clone();
    tokio::spawn(async move {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        while let Ok((s, _)) = listener.accept().await {
            let sink = sink.clone();
            tokio::spawn(async move {
                let (r, mut w) = s.into_split();
                let mut r = BufReader::new(r);
                w.write_all(b"220 sink\r\n").await.unwrap();
                let (mut rcpts, mut data, mut in_data) = (Vec::new(), String::new(), false);
                let mut line = String::new();
                while r.read_line(&mut line).await.unwrap_or(0) > 0 {
                    if in_data {
                        if line == ".\r\n" {
                            in_data = false;
                            sink.lock().await.push((std::mem::take(&mut rcpts), std::mem::take(&mut data)));
                            w.write_all(b"250 queued\r\n").await.unwrap();
                        } else {
                            data.push_str(&line);
                        }
                    } else {
                        let upper = line.to_ascii_uppercase();
                        let reply: &[u8] = if upper.starts_with("EHLO") {
                            b"250-sink\r\n250 8BITMIME\r\n"
                        } else if upper.starts_with("RCPT TO:") {
                            rcpts.push(line[8..].trim().trim_matches(['<', '>']).to_string());
                            b"250 ok\r\n"
                        } else if upper.starts_with("DATA") {
                            in_data = true;
                            b"354 go\r\n"
                        } else if upper.starts_with("QUIT") {
                            w.write_all(b"221 bye\r\n").await.unwrap();
                            break;
                        } else {
                            b"250 ok\r\n"
                        };
                        w.write_all(reply).await.unwrap();
                    }
                    line.clear();
                }
            });
        }
    });
    let srv = TestServer::start_with(move |c| {
        c.smtp = Some(pushsync::config::SmtpSettings {
            host: "127.0.0.1".into(),
            port,
            security: "none".into(),
            username: None,
            password: None,
            pass_through_credentials: false,
        });
    })
    .await;
    srv.add_user("alice").await;
    let mut a = srv.phone("alice", "A");
    a.provision().await;
    let mime = b"To: someone@elsewhere.example\r\nCc: other@elsewhere.example\r\nSubject: via relay\r\n\r\nhello\r\n";
    let r = a.post("SendMail", Some(&send_mail("s1", mime, false))).await;
    assert_eq!((r.status, r.body.len()), (StatusCode::OK, 0));
    let got = received.lock().await.clone();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, vec!["someone@elsewhere.example", "other@elsewhere.example"]);
    assert!(got[0].1.contains("Subject: via relay") && got[0].1.contains("alice@example.test"));
}

#[tokio::test]
async fn move_items_is_not_echoed_to_the_mover_but_reaches_others() {
    let srv = TestServer::start().await;
    srv.add_user("alice").await;
    srv.deliver("alice@example.test", "to move").await;
    let mut a = srv.phone("alice", "A");
    let folders = a.setup().await;
    let inbox = folders.iter().find(|(_, _, t)| t == "2").unwrap().1.clone();
    let trash = folders.iter().find(|(_, _, t)| t == "4").unwrap().1.clone();
    let mut keys = Vec::new();
    for c in [&inbox, &trash] {
        let k = text_of(collection(&a.post("Sync", Some(&sync_request(c, "0", 10, vec![]))).await.doc()), tag::air_sync::SYNC_KEY);
        let r = a.post("Sync", Some(&sync_request(c, &k, 10, vec![]))).await;
        keys.push(if r.body.is_empty() { k } else { text_of(collection(&r.doc()), tag::air_sync::SYNC_KEY) });
    }
    let mv = |src: &str, sf: &str, df: &str| {
        Element::new(tag::move_::MOVE_ITEMS).with(
            Element::new(tag::move_::MOVE)
                .with_text(tag::move_::SRC_MSG_ID, src)
                .with_text(tag::move_::SRC_FLD_ID, sf)
                .with_text(tag::move_::DST_FLD_ID, df),
        )
    };
    let src = format!("{inbox}:1");
    let r = a.post("MoveItems", Some(&mv(&src, &inbox, &trash))).await.doc();
    let resp = r.child(tag::move_::RESPONSE).unwrap();
    assert_eq!(text_of(resp, tag::move_::STATUS), "3");
    let dst = text_of(resp, tag::move_::DST_MSG_ID);
    assert!(dst.starts_with(&format!("{trash}:")));
    for (c, k) in [(&inbox, &keys[0]), (&trash, &keys[1])] {
        let r = a.post("Sync", Some(&sync_request(c, k, 10, vec![]))).await;
        assert!(r.body.is_empty() || commands(collection(&r.doc())).is_empty(), "the move came back to the device that made it");
    }
    // Bad input.
    let r = a.post("MoveItems", Some(&mv(&dst, &trash, "424242"))).await.doc();
    assert_eq!(text_of(r.child(tag::move_::RESPONSE).unwrap(), tag::move_::STATUS), "2");
    let r = a.post("MoveItems", Some(&mv(&dst, &trash, &trash))).await.doc();
    assert_eq!(text_of(r.child(tag::move_::RESPONSE).unwrap(), tag::move_::STATUS), "4");
    let r = a.post("MoveItems", Some(&mv(&format!("{inbox}:77"), &inbox, &trash))).await.doc();
    assert_eq!(text_of(r.child(tag::move_::RESPONSE).unwrap(), tag::move_::STATUS), "1");
}

#[tokio::test]
async fn folders_are_created_renamed_deleted_and_others_hear_of_it() {
    let srv = TestServer::start().await;
    srv.add_user("alice").await;
    let mut a = srv.phone("alice", "A");
    let folders = a.setup().await;
    let inbox = folders.iter().find(|(_, _, t)| t == "2").unwrap().1.clone();
    let mut b = srv.phone("alice", "B");
    b.setup().await;
    let (b_ping, b_key) = (srv.phone("alice", "B"), b.policy_key);
    let mut b_ping = b_ping;
    b_ping.policy_key = b_key;
    let inbox_b = inbox.clone();
    let waiting = tokio::spawn(async move {
        let p = Element::new(tag::ping::PING).with_text(tag::ping::HEARTBEAT_INTERVAL, "300").with(
            Element::new(tag::ping::FOLDERS)
                .with(Element::new(tag::ping::FOLDER).with_text(tag::ping::ID, inbox_b).with_text(tag::ping::CLASS, "Email")),
        );
        b_ping.post("Ping", Some(&p)).await.doc()
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    let create = |key: &str, parent: &str, name: &str| {
        Element::new(tag::folder_hierarchy::FOLDER_CREATE)
            .with_text(tag::folder_hierarchy::SYNC_KEY, key)
            .with_text(tag::folder_hierarchy::PARENT_ID, parent)
            .with_text(tag::folder_hierarchy::DISPLAY_NAME, name)
            .with_text(tag::folder_hierarchy::TYPE, "12")
    };
    let r = a.post("FolderCreate", Some(&create(&a.folder_key.clone(), "0", "Projects"))).await.doc();
    assert_eq!(text_of(&r, tag::folder_hierarchy::STATUS), "1");
    let projects = text_of(&r, tag::folder_hierarchy::SERVER_ID);
    a.folder_key = text_of(&r, tag::folder_hierarchy::SYNC_KEY);
    let r = tokio::time::timeout(Duration::from_secs(10), waiting).await.unwrap().unwrap();
    assert_eq!(text_of(&r, tag::ping::STATUS), "7", "the other device must FolderSync");

    let r = a.post("FolderCreate", Some(&create(&a.folder_key.clone(), &projects, "2026"))).await.doc();
    assert_eq!(text_of(&r, tag::folder_hierarchy::STATUS), "1", "nested");
    a.folder_key = text_of(&r, tag::folder_hierarchy::SYNC_KEY);
    let r = a.post("FolderCreate", Some(&create(&a.folder_key.clone(), "0", "Projects"))).await.doc();
    assert_eq!(text_of(&r, tag::folder_hierarchy::STATUS), "2", "exists");
    let r = a.post("FolderCreate", Some(&create("999", "0", "Other"))).await.doc();
    assert_eq!(text_of(&r, tag::folder_hierarchy::STATUS), "9");
    let r = a.post("FolderCreate", Some(&create(&a.folder_key.clone(), "4242", "Orphan"))).await.doc();
    assert_eq!(text_of(&r, tag::folder_hierarchy::STATUS), "5");

    // Its own changes do not come back through FolderSync; B's FolderSync shows them.
    let own = a.folder_sync().await;
    assert_eq!(text_of(own.child(tag::folder_hierarchy::CHANGES).unwrap(), tag::folder_hierarchy::COUNT), "0");
    let theirs = b.folder_sync().await;
    assert_eq!(text_of(theirs.child(tag::folder_hierarchy::CHANGES).unwrap(), tag::folder_hierarchy::COUNT), "2");

    let update = |key: &str, id: &str, name: &str| {
        Element::new(tag::folder_hierarchy::FOLDER_UPDATE)
            .with_text(tag::folder_hierarchy::SYNC_KEY, key)
            .with_text(tag::folder_hierarchy::SERVER_ID, id)
            .with_text(tag::folder_hierarchy::PARENT_ID, "0")
            .with_text(tag::folder_hierarchy::DISPLAY_NAME, name)
    };
    let r = a.post("FolderUpdate", Some(&update(&a.folder_key.clone(), &projects, "Archive 2026"))).await.doc();
    assert_eq!(text_of(&r, tag::folder_hierarchy::STATUS), "1");
    a.folder_key = text_of(&r, tag::folder_hierarchy::SYNC_KEY);
    let r = a.post("FolderUpdate", Some(&update(&a.folder_key.clone(), &inbox, "Renamed Inbox"))).await.doc();
    assert_eq!(text_of(&r, tag::folder_hierarchy::STATUS), "2", "special folders cannot be renamed");

    let delete = |key: &str, id: &str| {
        Element::new(tag::folder_hierarchy::FOLDER_DELETE)
            .with_text(tag::folder_hierarchy::SYNC_KEY, key)
            .with_text(tag::folder_hierarchy::SERVER_ID, id)
    };
    let r = a.post("FolderDelete", Some(&delete(&a.folder_key.clone(), &inbox))).await.doc();
    assert_eq!(text_of(&r, tag::folder_hierarchy::STATUS), "3");
    let r = a.post("FolderDelete", Some(&delete(&a.folder_key.clone(), &projects))).await.doc();
    assert_eq!(text_of(&r, tag::folder_hierarchy::STATUS), "1");
    a.folder_key = text_of(&r, tag::folder_hierarchy::SYNC_KEY);
    let r = a.post("FolderDelete", Some(&delete(&a.folder_key.clone(), &projects))).await.doc();
    assert_eq!(text_of(&r, tag::folder_hierarchy::STATUS), "4");
    let theirs = b.folder_sync().await;
    let deletes = theirs.child(tag::folder_hierarchy::CHANGES).unwrap().children_with(tag::folder_hierarchy::DELETE).count();
    assert_eq!(deletes, 2, "the folder and its subfolder");
}

#[tokio::test]
async fn search_find_and_the_directory() {
    let srv = TestServer::start().await;
    srv.add_user("alice").await;
    srv.add_user("albert").await;
    srv.add_user("bob").await;
    srv.deliver_raw("alice@example.test", &message("alice@example.test", "Quarterly budget", "numbers inside")).await;
    srv.deliver_raw("alice@example.test", &message("alice@example.test", "Lunch", "pizza on friday")).await;
    let mut a = srv.phone("alice", "A");
    let inbox = a.folder_id("2").await;

    let search = |query: Element| {
        Element::new(tag::search::SEARCH).with(
            Element::new(tag::search::STORE)
                .with_text(tag::search::NAME, "Mailbox")
                .with(Element::new(tag::search::QUERY).with(query))
                .with(Element::new(tag::search::OPTIONS).with_text(tag::search::RANGE, "0-9")),
        )
    };
    let and = Element::new(tag::search::AND)
        .with_text(tag::air_sync::CLASS, "Email")
        .with_text(tag::air_sync::COLLECTION_ID, inbox.clone())
        .with_text(tag::search::FREE_TEXT, "pizza");
    let r = a.post("Search", Some(&search(and))).await.doc();
    let store = r.child(tag::search::RESPONSE).unwrap().child(tag::search::STORE).unwrap();
    assert_eq!(text_of(store, tag::search::STATUS), "1");
    assert_eq!(text_of(store, tag::search::TOTAL), "1");
    let result = store.child(tag::search::RESULT).unwrap();
    assert_eq!(text_of(result.child(tag::search::PROPERTIES).unwrap(), tag::email::SUBJECT), "Lunch");
    assert!(text_of(result, tag::search::LONG_ID).starts_with(&format!("{inbox}:")));

    let later = Element::new(tag::search::GREATER_THAN)
        .with(Element::new(tag::email::DATE_RECEIVED))
        .with_text(tag::search::VALUE, "2000-01-01T00:00:00.000Z");
    let r = a.post("Search", Some(&search(later))).await.doc();
    assert_eq!(text_of(r.child(tag::search::RESPONSE).unwrap().child(tag::search::STORE).unwrap(), tag::search::TOTAL), "2");
    let bad = Element::new(tag::search::EQUAL_TO);
    let r = a.post("Search", Some(&search(bad))).await.doc();
    assert_ne!(text_of(r.child(tag::search::RESPONSE).unwrap().child(tag::search::STORE).unwrap(), tag::search::STATUS), "1");

    let gal = Element::new(tag::search::SEARCH)
        .with(Element::new(tag::search::STORE).with_text(tag::search::NAME, "GAL").with_text(tag::search::QUERY, "al"));
    let r = a.post("Search", Some(&gal)).await.doc();
    let store = r.child(tag::search::RESPONSE).unwrap().child(tag::search::STORE).unwrap();
    assert_eq!(text_of(store, tag::search::TOTAL), "2", "alice and albert");

    let find = Element::new(tag::find::FIND).with_text(tag::find::SEARCH_ID, "s1").with(
        Element::new(tag::find::EXECUTE_SEARCH).with(
            Element::new(tag::find::MAIL_BOX_SEARCH_CRITERION)
                .with(Element::new(tag::find::QUERY).with_text(tag::air_sync::CLASS, "Email").with_text(tag::find::FREE_TEXT, "budget"))
                .with(Element::new(tag::find::OPTIONS).with_text(tag::find::RANGE, "0-4")),
        ),
    );
    let r = a.post("Find", Some(&find)).await.doc();
    assert_eq!(text_of(&r, tag::find::STATUS), "1");
    let resp = r.child(tag::find::RESPONSE).unwrap();
    assert_eq!(text_of(resp, tag::find::TOTAL), "1");
    assert_eq!(
        text_of(resp.child(tag::find::RESULT).unwrap().child(tag::find::PROPERTIES).unwrap(), tag::email::SUBJECT),
        "Quarterly budget"
    );
    a.version = "16.0".into();
    assert_eq!(a.post("Find", Some(&find)).await.status_code().as_deref(), Some("138"), "Find is 16.1 only");
    a.version = "16.1".into();

    let rr = Element::new(tag::resolve_recipients::RESOLVE_RECIPIENTS)
        .with_text(tag::resolve_recipients::TO, "bob@example.test")
        .with_text(tag::resolve_recipients::TO, "al")
        .with_text(tag::resolve_recipients::TO, "zed");
    let r = a.post("ResolveRecipients", Some(&rr)).await.doc();
    let statuses: Vec<String> =
        r.children_with(tag::resolve_recipients::RESPONSE).map(|x| text_of(x, tag::resolve_recipients::STATUS)).collect();
    assert_eq!(statuses, vec!["1", "2", "4"]);
    let ambiguous = r.children_with(tag::resolve_recipients::RESPONSE).nth(1).unwrap();
    let all = ambiguous.children_with(tag::resolve_recipients::RECIPIENT).count();
    assert_eq!(text_of(ambiguous, tag::resolve_recipients::RECIPIENT_COUNT), all.to_string());

    // Fewer suggestions than matches: a partial list, and the count of them all.
    let rr = Element::new(tag::resolve_recipients::RESOLVE_RECIPIENTS)
        .with_text(tag::resolve_recipients::TO, "al")
        .with(Element::new(tag::resolve_recipients::OPTIONS).with_text(tag::resolve_recipients::MAX_AMBIGUOUS_RECIPIENTS, "1"));
    let r = a.post("ResolveRecipients", Some(&rr)).await.doc();
    let partial = r.child(tag::resolve_recipients::RESPONSE).unwrap();
    assert_eq!(text_of(partial, tag::resolve_recipients::STATUS), "3");
    assert_eq!(partial.children_with(tag::resolve_recipients::RECIPIENT).count(), 1);
    assert_eq!(text_of(partial, tag::resolve_recipients::RECIPIENT_COUNT), all.to_string());
}

#[tokio::test]
async fn out_of_office_is_stored_and_answers_each_sender_once() {
    let (srv, mut a, _) = two_users().await;
    let set = Element::new(tag::settings::SETTINGS).with(
        Element::new(tag::settings::OOF).with(
            Element::new(tag::settings::SET).with_text(tag::settings::OOF_STATE, "1").with(
                Element::new(tag::settings::OOF_MESSAGE)
                    .with(Element::new(tag::settings::APPLIES_TO_INTERNAL))
                    .with_text(tag::settings::ENABLED, "1")
                    .with_text(tag::settings::REPLY_MESSAGE, "On holiday")
                    .with_text(tag::settings::BODY_TYPE, "Text"),
            ),
        ),
    );
    let r = a.post("Settings", Some(&set)).await.doc();
    assert_eq!(text_of(r.child(tag::settings::OOF).unwrap(), tag::settings::STATUS), "1");
    let get = Element::new(tag::settings::SETTINGS)
        .with(Element::new(tag::settings::OOF).with(Element::new(tag::settings::GET).with_text(tag::settings::BODY_TYPE, "Text")));
    let r = a.post("Settings", Some(&get)).await.doc();
    let xml = pushsync::wbxml::to_xml(&r);
    assert!(xml.contains("<Settings:OofState>1</Settings:OofState>") && xml.contains("On holiday"), "{xml}");

    // Bob writes twice; one automatic reply.
    for _ in 0..2 {
        let raw = b"From: bob@example.test\r\nTo: alice@example.test\r\nSubject: question\r\n\r\n?\r\n";
        srv.deliver_raw("alice@example.test", raw).await;
    }
    let at_bob = messages_in(&srv, "bob", SpecialUse::Inbox).await;
    assert_eq!(at_bob.len(), 1);
    let reply = MessageParser::default().parse(&at_bob[0]).unwrap();
    assert!(reply.subject().unwrap().starts_with("Automatic reply"));
    assert_eq!(reply.header_raw("Auto-Submitted").map(str::trim), Some("auto-replied"));
    a.version = "16.1".into();
    let bad = Element::new(tag::settings::SETTINGS)
        .with(Element::new(tag::settings::OOF).with(Element::new(tag::settings::SET).with_text(tag::settings::OOF_STATE, "2")));
    let r = a.post("Settings", Some(&bad)).await.doc();
    assert_eq!(text_of(r.child(tag::settings::OOF).unwrap(), tag::settings::STATUS), "6", "time-based without a window");
}
