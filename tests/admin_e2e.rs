//! The administrator's side through the real server: entitlement per protocol version,
//! cutting waiting Pings, remote wipe, quarantine, policies, usage, the API's token.

mod common;

use std::time::{Duration, Instant};

use common::*;
use http::{Method, StatusCode};
use pushsync::wbxml::{Element, tag};
use serde_json::{Value, json};

fn folder_sync(key: &str) -> Element {
    Element::new(tag::folder_hierarchy::FOLDER_SYNC).with_text(tag::folder_hierarchy::SYNC_KEY, key)
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[tokio::test]
async fn unentitled_users_are_refused_per_protocol_version_and_never_reach_the_store() {
    let srv = TestServer::start().await;
    srv.add_user_sync("carol", false).await;
    let mut new = srv.phone("carol", "N14");
    new.policy_key = Some(1);
    assert_eq!(new.post("FolderSync", Some(&folder_sync("0"))).await.status_code().as_deref(), Some("126"));
    let mut old = srv.phone("carol", "O12");
    old.version = "12.1".into();
    assert_eq!(old.post("FolderSync", Some(&folder_sync("0"))).await.status, StatusCode::FORBIDDEN);
    assert!(srv.app().state.list_devices(Some("carol")).await.unwrap().is_empty(), "no device record, no store access");

    let (s, _) = srv.admin_call(Method::PUT, "/v1/sync/carol", Some(json!({ "enabled": true })), None).await;
    assert_eq!(s, StatusCode::OK);
    new.provision().await;
    assert_eq!(
        new.post("FolderSync", Some(&folder_sync("0"))).await.status_code().as_deref(),
        Some("1"),
        "enabling lets the same device in"
    );
}

#[tokio::test]
async fn disabling_a_user_ends_their_waiting_ping_within_a_second() {
    let srv = TestServer::start().await;
    srv.add_user("alice").await;
    let mut phone = srv.phone("alice", "A");
    let inbox = phone.folder_id("2").await;
    let waiting = tokio::spawn(async move { phone.post("Ping", Some(&ping(600, &[&inbox]))).await.doc() });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let (s, body) = srv.admin_call(Method::PUT, "/v1/sync/alice", Some(json!({ "enabled": false })), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(json(&body)["waiting_requests_ended"], 1);
    let r = tokio::time::timeout(Duration::from_secs(1), waiting).await.expect("cut within a second").unwrap();
    assert_eq!(text_of(&r, tag::ping::STATUS), "126");
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn remote_wipe_round_trip_then_blocked() {
    let srv = TestServer::start().await;
    srv.add_user("alice").await;
    let mut phone = srv.phone("alice", "LOST");
    phone.setup().await;
    let (s, _) = srv.admin_call(Method::POST, "/v1/devices/alice/LOST/wipe", Some(json!({})), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(phone.post("FolderSync", Some(&folder_sync("0"))).await.status_code().as_deref(), Some("140"));
    let provision = Element::new(tag::provision::PROVISION).with(
        Element::new(tag::provision::POLICIES)
            .with(Element::new(tag::provision::POLICY).with_text(tag::provision::POLICY_TYPE, "MS-EAS-Provisioning-WBXML")),
    );
    let r = phone.post("Provision", Some(&provision)).await.doc();
    assert!(r.child(tag::provision::REMOTE_WIPE).is_some(), "{}", pushsync::wbxml::to_xml(&r));
    let ack =
        Element::new(tag::provision::PROVISION).with(Element::new(tag::provision::REMOTE_WIPE).with_text(tag::provision::STATUS, "1"));
    assert_eq!(text_of(&phone.post("Provision", Some(&ack)).await.doc(), tag::provision::STATUS), "1");
    let (_, body) = srv.admin_call(Method::GET, "/v1/devices?user=alice", None, None).await;
    let d = &json(&body)["devices"][0];
    assert_eq!(d["wipe"], "acknowledged");
    assert!(d["wipe_acknowledged_at"].is_i64());
    assert_eq!(d["access"], "blocked");
    assert_eq!(phone.post("FolderSync", Some(&folder_sync("0"))).await.status_code().as_deref(), Some("129"), "blocked after the wipe");
    let (_, body) = srv.admin_call(Method::GET, "/v1/audit", None, None).await;
    let actions: Vec<String> =
        json(&body)["entries"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap().to_string()).collect();
    assert!(actions.contains(&"device.wipe".to_string()) && actions.contains(&"device.wipe.acknowledged".to_string()), "{actions:?}");
}

#[tokio::test]
async fn account_only_wipe_for_16_1() {
    let srv = TestServer::start().await;
    srv.add_user("alice").await;
    let mut phone = srv.phone("alice", "BYOD");
    phone.setup().await;
    srv.admin_call(Method::POST, "/v1/devices/alice/BYOD/wipe", Some(json!({ "account_only": true })), None).await;
    let provision = Element::new(tag::provision::PROVISION).with(
        Element::new(tag::provision::POLICIES)
            .with(Element::new(tag::provision::POLICY).with_text(tag::provision::POLICY_TYPE, "MS-EAS-Provisioning-WBXML")),
    );
    let r = phone.post("Provision", Some(&provision)).await.doc();
    assert!(r.child(tag::provision::ACCOUNT_ONLY_REMOTE_WIPE).is_some(), "{}", pushsync::wbxml::to_xml(&r));
    // The same device now speaking 14.1 cannot be told "account only": it is shut out, never
    // sent a full wipe.
    phone.version = "14.1".into();
    let r = phone.post("Provision", Some(&provision)).await;
    assert_eq!(r.status_code().as_deref(), Some("129"));
    let doc = r.doc();
    assert!(doc.child(tag::provision::REMOTE_WIPE).is_none(), "{}", pushsync::wbxml::to_xml(&doc));
}

#[tokio::test]
async fn an_account_only_wipe_is_refused_for_a_device_that_cannot_do_it() {
    let srv = TestServer::start().await;
    srv.add_user("alice").await;
    let mut phone = srv.phone("alice", "OLDPHONE");
    phone.version = "14.1".into();
    phone.setup().await;
    let (s, body) = srv.admin_call(Method::POST, "/v1/devices/alice/OLDPHONE/wipe", Some(json!({ "account_only": true })), None).await;
    assert_eq!(s, StatusCode::CONFLICT, "{body}");
    assert!(body.contains("16.1"), "{body}");
    let (_, body) = srv.admin_call(Method::GET, "/v1/devices?user=alice", None, None).await;
    assert_eq!(json(&body)["devices"][0]["wipe"], "none", "nothing was requested");
    // The phone carries on as before: no wipe of any kind is pending.
    assert_eq!(phone.post("FolderSync", Some(&folder_sync("0"))).await.status_code().as_deref(), Some("1"));
}

#[tokio::test]
async fn quarantine_then_allow() {
    let srv = TestServer::start().await;
    srv.add_user("alice").await;
    srv.deliver("alice@example.test", "real mail").await;
    let (s, _) = srv
        .admin_call(Method::POST, "/v1/rules", Some(json!({ "kind": "device_type", "pattern": "Android*", "access": "quarantined" })), None)
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let mut phone = srv.phone("alice", "DROID");
    phone.device_type = "AndroidPhone".into();
    let inbox = phone.folder_id("2").await;
    let r = phone.post("Sync", Some(&sync_request(&inbox, "0", 10, vec![]))).await.doc();
    let key = text_of(collection(&r), tag::air_sync::SYNC_KEY);
    let r = phone.post("Sync", Some(&sync_request(&inbox, &key, 10, vec![]))).await.doc();
    let c = collection(&r);
    let cmds = commands(c);
    assert_eq!(cmds.len(), 1, "only the notice");
    let data = c.child(tag::air_sync::COMMANDS).unwrap().child(tag::air_sync::ADD).unwrap().child(tag::air_sync::APPLICATION_DATA).unwrap();
    assert!(text_of(data, tag::email::SUBJECT).contains("quarantined"));
    let key = text_of(c, tag::air_sync::SYNC_KEY);
    let fetch = Element::new(tag::item_operations::ITEM_OPERATIONS).with(
        Element::new(tag::item_operations::FETCH)
            .with_text(tag::item_operations::STORE, "Mailbox")
            .with_text(tag::air_sync::COLLECTION_ID, inbox.clone())
            .with_text(tag::air_sync::SERVER_ID, format!("{inbox}:1")),
    );
    assert_eq!(phone.post("ItemOperations", Some(&fetch)).await.status_code().as_deref(), Some("129"));

    let (_, body) = srv.admin_call(Method::GET, "/v1/devices?user=alice", None, None).await;
    assert_eq!(json(&body)["devices"][0]["access"], "quarantined");
    let (s, _) = srv.admin_call(Method::PUT, "/v1/devices/alice/DROID/access", Some(json!({ "state": "allowed" })), None).await;
    assert_eq!(s, StatusCode::OK);
    let r = phone.post("Sync", Some(&sync_request(&inbox, &key, 10, vec![]))).await.doc();
    assert_eq!(text_of(collection(&r), tag::air_sync::STATUS), "3", "the quarantine keys end: the device starts over");
    let r = phone.post("Sync", Some(&sync_request(&inbox, "0", 10, vec![]))).await.doc();
    let key = text_of(collection(&r), tag::air_sync::SYNC_KEY);
    let r = phone.post("Sync", Some(&sync_request(&inbox, &key, 10, vec![]))).await.doc();
    assert_eq!(commands(collection(&r)).len(), 1, "the real mail");
}

#[tokio::test]
async fn a_policy_change_forces_reprovisioning() {
    let srv = TestServer::start().await;
    srv.add_user("alice").await;
    let mut phone = srv.phone("alice", "A");
    phone.setup().await;
    assert_eq!(phone.post("FolderSync", Some(&folder_sync("0"))).await.status_code().as_deref(), Some("1"));
    let (s, body) = srv
        .admin_call(
            Method::PUT,
            "/v1/policies/strict",
            Some(json!({ "device_password_enabled": true, "min_device_password_length": 6 })),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (s, body) = srv.admin_call(Method::POST, "/v1/policies/strict/default", None, None).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(json(&body)["devices_reprovisioning"], 1);
    assert_eq!(phone.post("FolderSync", Some(&folder_sync("0"))).await.status_code().as_deref(), Some("142"));

    // Provisioning again delivers the new settings.
    let first = Element::new(tag::provision::PROVISION).with(
        Element::new(tag::provision::POLICIES)
            .with(Element::new(tag::provision::POLICY).with_text(tag::provision::POLICY_TYPE, "MS-EAS-Provisioning-WBXML")),
    );
    let r = phone.post("Provision", Some(&first)).await.doc();
    let doc = r
        .child(tag::provision::POLICIES)
        .unwrap()
        .child(tag::provision::POLICY)
        .unwrap()
        .child(tag::provision::DATA)
        .unwrap()
        .child(tag::provision::EAS_PROVISION_DOC)
        .unwrap();
    assert_eq!(text_of(doc, tag::provision::DEVICE_PASSWORD_ENABLED), "1");
    assert_eq!(text_of(doc, tag::provision::MIN_DEVICE_PASSWORD_LENGTH), "6");
    phone.provision().await;
    assert_eq!(phone.post("FolderSync", Some(&folder_sync("0"))).await.status_code().as_deref(), Some("1"));
    let (_, body) = srv.admin_call(Method::GET, "/v1/devices", None, None).await;
    let d = &json(&body)["devices"][0];
    assert_eq!(d["policy_name"], "strict");
    assert_eq!(d["policy_compliant"], true);
    // A 12.1 device is told with HTTP 449.
    let mut old = srv.phone("alice", "OLD");
    old.version = "12.1".into();
    old.setup().await;
    srv.admin_call(
        Method::PUT,
        "/v1/policies/strict",
        Some(json!({ "device_password_enabled": true, "min_device_password_length": 8 })),
        None,
    )
    .await;
    assert_eq!(old.post("FolderSync", Some(&folder_sync("0"))).await.status.as_u16(), 449);
}

#[tokio::test]
async fn usage_counts_match_the_actions_taken() {
    let srv = TestServer::start().await;
    srv.add_user("alice").await;
    srv.add_user("bob").await;
    srv.add_user_sync("carol", false).await;
    let mut a = srv.phone("alice", "A");
    let inbox = a.folder_id("2").await;
    for _ in 0..3 {
        a.post("Sync", Some(&sync_request(&inbox, "0", 10, vec![]))).await;
    }
    let mut a2 = srv.phone("alice", "A2");
    a2.folder_id("2").await;
    a2.post("Sync", Some(&sync_request(&inbox, "0", 10, vec![]))).await;
    // One push to alice.
    let a_ping = {
        let mut p = srv.phone("alice", "A");
        p.policy_key = a.policy_key;
        p
    };
    let i2 = inbox.clone();
    let waiting = tokio::spawn(async move { a_ping.post("Ping", Some(&ping(300, &[&i2]))).await.doc() });
    tokio::time::sleep(Duration::from_millis(300)).await;
    srv.deliver("alice@example.test", "push me").await;
    assert_eq!(text_of(&waiting.await.unwrap(), tag::ping::STATUS), "2");

    let month = chrono::Utc::now().format("%Y-%m").to_string();
    let (s, csv) = srv.admin_call(Method::GET, &format!("/v1/usage?month={month}&format=csv"), None, None).await;
    assert_eq!(s, StatusCode::OK, "{csv}");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "month,login,days_enabled,syncs,pushes,active_devices");
    assert!(lines.contains(&format!("{month},alice,1,4,1,2").as_str()), "{csv}");
    assert!(lines.contains(&format!("{month},bob,1,0,0,0").as_str()), "{csv}");
    assert!(!csv.contains("carol"), "{csv}");
    let (_, j) = srv.admin_call(Method::GET, &format!("/v1/usage?month={month}"), None, None).await;
    let j = json(&j);
    assert_eq!(j["enabled_users"], 2);
    let (s, _) = srv.admin_call(Method::GET, "/v1/usage?month=garbage", None, None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_admin_api_needs_its_token_and_listens_on_loopback() {
    assert!(pushsync::config::Config::default().admin_listen.ip().is_loopback());
    let srv = TestServer::start().await;
    for token in [Some(""), Some("wrong")] {
        let (s, _) = srv.admin_call(Method::GET, "/v1/users", None, token).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
    let (s, _) = srv.admin_call(Method::GET, "/v1/users", None, None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = srv.admin_call(Method::GET, "/health", None, Some("")).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn devices_are_listed_and_removed_partnerships_start_over() {
    let srv = TestServer::start().await;
    srv.add_user("alice").await;
    let mut phone = srv.phone("alice", "IPH");
    let inbox = phone.folder_id("2").await;
    let r = phone.post("Sync", Some(&sync_request(&inbox, "0", 10, vec![]))).await.doc();
    let key = text_of(collection(&r), tag::air_sync::SYNC_KEY);
    let (_, body) = srv.admin_call(Method::GET, "/v1/devices?user=alice", None, None).await;
    let d = &json(&body)["devices"][0];
    assert_eq!(d["device_id"], "IPH");
    assert_eq!(d["device_type"], "iPhone");
    assert_eq!(d["info"]["model"], "TestPhone 1");
    assert_eq!(d["info"]["user_agent"], "pushsync-test/1.0");
    assert_eq!(d["protocol_version"], "16.1");
    assert_eq!(d["access"], "allowed");
    let (s, _) = srv.admin_call(Method::DELETE, "/v1/devices/alice/IPH", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(phone.post("FolderSync", Some(&folder_sync("0"))).await.status_code().as_deref(), Some("142"), "must provision again");
    phone.provision().await;
    let r = phone.post("Sync", Some(&sync_request(&inbox, &key, 10, vec![]))).await.doc();
    assert_eq!(text_of(collection(&r), tag::air_sync::STATUS), "3", "old sync keys are gone");
    let (s, _) = srv.admin_call(Method::DELETE, "/v1/devices/alice/NOPE", None, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_openapi_document_matches_the_routes() {
    let doc: Value = serde_json::from_str(include_str!("../docs/admin-api.openapi.json")).expect("valid JSON");
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let mut documented = std::collections::BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if ["get", "put", "post", "delete"].contains(&method.as_str()) {
                documented.insert((method.clone(), path.clone()));
            }
        }
    }
    // Every route the router declares is documented...
    let source = include_str!("../src/admin/api.rs");
    let mut declared = std::collections::BTreeSet::new();
    let starts: Vec<usize> = source.match_indices(".route(\"").map(|(i, _)| i).collect();
    for (n, &start) in starts.iter().enumerate() {
        let rest = &source[start + 8..];
        let path = rest.split('"').next().unwrap().to_string();
        // The handlers of this route: up to the next route (or the end of the statement).
        let end = starts.get(n + 1).map(|e| e - start - 8).unwrap_or_else(|| rest.find(';').unwrap_or(rest.len()));
        let handlers = &rest[..end];
        for method in ["get", "put", "post", "delete"] {
            if handlers.contains(&format!("{method}(")) {
                declared.insert((method.to_string(), path.clone()));
            }
        }
    }
    assert_eq!(declared, documented, "router and OpenAPI document differ");
    // ...and every documented route answers (not 404/405) on a running server.
    let srv = TestServer::start().await;
    for (method, path) in &documented {
        let concrete =
            path.replace("{login}", "nobody").replace("{device_id}", "nodev").replace("{name}", "nopolicy").replace("{id}", "999999");
        let concrete = if concrete == "/v1/usage" {
            "/v1/usage?month=2026-11".to_string()
        } else if concrete == "/v1/deliver" {
            "/v1/deliver?to=nobody@example.test".to_string()
        } else {
            concrete
        };
        let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let body = if m == Method::GET || m == Method::DELETE { None } else { Some(json!({})) };
        let (s, text) = srv.admin_call(m, &concrete, body, None).await;
        assert!(s != StatusCode::NOT_FOUND || text.contains("no such") || text.contains("error"), "{method} {path}: {s} {text}");
        assert_ne!(s, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
    }
}
