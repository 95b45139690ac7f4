//! The HTTPS front door: OPTIONS, request forms, authentication, limits and bad input,
//! against the real server.

mod common;

use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use common::*;
use http::{Method, StatusCode};
use pushsync::wbxml::{Element, tag};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn options_announces_versions_and_implemented_commands() {
    let srv = TestServer::start().await;
    let phone = srv.phone("nobody", "D1");
    let r = phone.raw(Method::OPTIONS, "", &[], Bytes::new()).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["MS-ASProtocolVersions"], "12.0,12.1,14.0,14.1,16.0,16.1");
    assert_eq!(r.headers["Allow"], "OPTIONS,POST");
    assert!(r.headers.contains_key("MS-Server-ActiveSync"));
    let commands = r.headers["MS-ASProtocolCommands"].to_str().unwrap().to_string();
    for c in ["Sync", "FolderSync", "Ping", "Provision", "ItemOperations", "GetItemEstimate", "Settings"] {
        assert!(commands.split(',').any(|x| x == c), "{c} missing from {commands}");
    }
    // Only what is implemented is announced.
    assert!(!commands.split(',').any(|x| x == "MeetingResponse" || x == "ValidateCert"), "{commands}");
}

#[tokio::test]
async fn credentials_are_required_and_checked() {
    let srv = TestServer::start().await;
    srv.add_user("alice").await;
    let mut phone = srv.phone("alice", "D1");
    let fs = Element::new(tag::folder_hierarchy::FOLDER_SYNC).with_text(tag::folder_hierarchy::SYNC_KEY, "0");
    let headers = [("MS-ASProtocolVersion", "14.1".to_string())];
    let r = phone
        .raw(Method::POST, "?Cmd=FolderSync&User=alice&DeviceId=D1&DeviceType=t", &headers, Bytes::from(pushsync::wbxml::encode(&fs)))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.headers["WWW-Authenticate"].to_str().unwrap().starts_with("Basic realm="));
    phone.password = "wrong".into();
    assert_eq!(phone.post("FolderSync", Some(&fs)).await.status, StatusCode::UNAUTHORIZED);
    // The email address works as a login too.
    phone.password = PASSWORD.into();
    phone.user = "alice@example.test".into();
    phone.provision().await;
    assert_eq!(phone.post("FolderSync", Some(&fs)).await.status_code().as_deref(), Some("1"));
}

#[tokio::test]
async fn malformed_request_lines_are_400() {
    let srv = TestServer::start().await;
    srv.add_user("alice").await;
    let phone = srv.phone("alice", "D1");
    let auth = ("Authorization", phone.auth_header());
    let v141 = ("MS-ASProtocolVersion", "14.1".to_string());
    for query in [
        "?User=alice&DeviceId=D1&DeviceType=t",
        "?Cmd=Frobnicate&DeviceId=D1&DeviceType=t",
        "?Cmd=Sync&DeviceType=t",
        "?Cmd=Sync&DeviceId=D1",
    ] {
        let r = phone.raw(Method::POST, query, &[auth.clone(), v141.clone()], Bytes::new()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{query}");
    }
    let r = phone
        .raw(Method::POST, "?Cmd=Sync&DeviceId=D1&DeviceType=t", &[auth.clone(), ("MS-ASProtocolVersion", "2.5".into())], Bytes::new())
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.headers["MS-ASProtocolVersions"], "12.0,12.1,14.0,14.1,16.0,16.1");
    // Unknown extra parameters are fine.
    let r = phone.raw(Method::OPTIONS, "?Cmd=Sync&Whatever=1", &[], Bytes::new()).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(phone.raw(Method::GET, "", std::slice::from_ref(&auth), Bytes::new()).await.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn malformed_wbxml_is_400_and_oversized_bodies_413() {
    let srv = TestServer::start_with(|c| c.limits.max_body_bytes = 4096).await;
    srv.add_user("alice").await;
    let mut phone = srv.phone("alice", "D1");
    phone.provision().await;
    let mut headers = vec![
        ("Authorization", phone.auth_header()),
        ("MS-ASProtocolVersion", "14.1".to_string()),
        ("X-MS-PolicyKey", phone.policy_key.unwrap().to_string()),
    ];
    let q = "?Cmd=FolderSync&User=alice&DeviceId=D1&DeviceType=iPhone";
    for garbage in [&b"\x03\x01\x6a\x00\x45\x45"[..], b"not wbxml at all", b"\x03\x01\x6a\x00\x00\x77\x45\x01"] {
        let r = phone.raw(Method::POST, q, &headers, Bytes::copy_from_slice(garbage)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{garbage:?}");
    }
    let r = phone.raw(Method::POST, q, &headers, Bytes::from(vec![0u8; 5000])).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    // Valid WBXML of the wrong command: the command's protocol-error status.
    let wrong = Element::new(tag::ping::PING);
    let r = phone.raw(Method::POST, q, &headers, Bytes::from(pushsync::wbxml::encode(&wrong))).await;
    assert_eq!(r.status_code().as_deref(), Some("10"));
    headers.truncate(2);
}

#[tokio::test]
async fn unimplemented_commands_are_501_never_a_fake_success() {
    let srv = TestServer::start().await;
    srv.add_user("alice").await;
    let mut phone = srv.phone("alice", "D1");
    phone.provision().await;
    let r = phone.post("ValidateCert", Some(&Element::new(tag::validate_cert::VALIDATE_CERT))).await;
    assert_eq!(r.status, StatusCode::NOT_IMPLEMENTED);
}

#[tokio::test]
async fn the_base64_query_form_works() {
    let srv = TestServer::start().await;
    srv.add_user("alice").await;
    let mut phone = srv.phone("alice", "B64DEV");
    let key = phone.provision().await;
    // FolderSync (code 9) in protocol 14.1, device id as bytes, policy key in the query.
    let mut q = vec![141u8, 9, 0x09, 0x04, 6];
    q.extend_from_slice(b"B64DEV");
    q.push(4);
    q.extend_from_slice(&key.to_le_bytes());
    q.push(6);
    q.extend_from_slice(b"iPhone");
    let query = format!("?{}", base64::engine::general_purpose::STANDARD.encode(&q));
    let fs = Element::new(tag::folder_hierarchy::FOLDER_SYNC).with_text(tag::folder_hierarchy::SYNC_KEY, "0");
    let r = phone.raw(Method::POST, &query, &[("Authorization", phone.auth_header())], Bytes::from(pushsync::wbxml::encode(&fs))).await;
    assert_eq!(r.status_code().as_deref(), Some("1"));
    assert!(folders_of(&r.doc()).len() >= 5);
}

#[tokio::test]
async fn provisioning_is_required_per_protocol_version() {
    let srv = TestServer::start().await;
    srv.add_user("alice").await;
    let fs = Element::new(tag::folder_hierarchy::FOLDER_SYNC).with_text(tag::folder_hierarchy::SYNC_KEY, "0");
    let mut new = srv.phone("alice", "NEW14");
    assert_eq!(new.post("FolderSync", Some(&fs)).await.status_code().as_deref(), Some("142"));
    new.policy_key = Some(12345);
    assert_eq!(new.post("FolderSync", Some(&fs)).await.status_code().as_deref(), Some("142"));
    new.provision().await;
    new.policy_key = Some(new.policy_key.unwrap() ^ 1);
    assert_eq!(new.post("FolderSync", Some(&fs)).await.status_code().as_deref(), Some("144"));

    let mut old = srv.phone("alice", "OLD12");
    old.version = "12.1".into();
    assert_eq!(old.post("FolderSync", Some(&fs)).await.status.as_u16(), 449);
    old.provision().await;
    assert_eq!(old.post("FolderSync", Some(&fs)).await.status_code().as_deref(), Some("1"));
}

#[tokio::test]
async fn a_slow_body_times_out_with_408() {
    let srv = TestServer::start_with(|c| c.limits.body_timeout_secs = 1).await;
    srv.add_user("alice").await;
    let phone = srv.phone("alice", "SLOW");
    let mut s = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    let head = format!(
        "POST /Microsoft-Server-ActiveSync?Cmd=FolderSync&User=alice&DeviceId=SLOW&DeviceType=t HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nMS-ASProtocolVersion: 14.1\r\nContent-Length: 100\r\n\r\n\x03\x01",
        phone.auth_header()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await.expect("the server must answer").unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
}

#[tokio::test]
async fn slow_headers_are_cut_off() {
    let srv = TestServer::start_with(|c| c.limits.header_timeout_secs = 1).await;
    let mut s = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(b"POST /Microsoft-Server-ActiveSync?Cmd=Sync HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let mut buf = vec![0u8; 1024];
    let r = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await.expect("the server must close the connection");
    // Either an error status or a closed connection; never a hang.
    let n = r.unwrap_or(0);
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(n == 0 || text.starts_with("HTTP/1.1 408") || text.starts_with("HTTP/1.1 4"), "{text}");
}

#[tokio::test]
async fn unknown_paths_are_404() {
    let srv = TestServer::start().await;
    let phone = srv.phone("x", "y");
    let client: hyper_util::client::legacy::Client<_, http_body_util::Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let r = client
        .request(http::Request::get(format!("http://{}/nope", phone.addr)).body(http_body_util::Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

/// HTTPS with the self-signed certificate generated on first start, HTTP/2 chosen by ALPN,
/// and HTTP/1.1 still offered.
#[tokio::test]
async fn https_with_http2_by_alpn() {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use rustls_pki_types::pem::PemObject;
    let srv = TestServer::start_with(|c| c.plain_http = false).await;
    let (cert_path, _) = pushsync::server::tls::generated_paths(srv.dir.path());
    let cert = rustls_pki_types::CertificateDer::from_pem_file(&cert_path).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    for (alpn, expect_h2) in [(vec![b"h2".to_vec(), b"http/1.1".to_vec()], true), (vec![b"http/1.1".to_vec()], false)] {
        let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        config.alpn_protocols = alpn;
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
        let tls = connector
            .connect(rustls_pki_types::ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .expect("TLS handshake with the generated certificate");
        let negotiated_h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        assert_eq!(negotiated_h2, expect_h2);
        let req = http::Request::builder()
            .method(Method::OPTIONS)
            .uri(format!("https://localhost:{}/Microsoft-Server-ActiveSync", srv.addr.port()))
            .body(http_body_util::Full::new(Bytes::new()))
            .unwrap();
        let response = if negotiated_h2 {
            let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await.unwrap();
            tokio::spawn(conn);
            send.send_request(req).await.unwrap()
        } else {
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
            tokio::spawn(conn);
            send.send_request(req).await.unwrap()
        };
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["MS-ASProtocolVersions"], "12.0,12.1,14.0,14.1,16.0,16.1");
    }
}

/// An HTTP/2 connection kept busy stays open; once no request has been open on it for the
/// header timeout, the server closes it (hyper alone would keep it, answering PINGs).
#[tokio::test]
async fn an_idle_http2_connection_is_closed() {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let srv = TestServer::start_with(|c| c.limits.header_timeout_secs = 1).await;
    let tcp = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await.unwrap();
    let conn = tokio::spawn(conn);
    let options = || {
        http::Request::builder()
            .method(Method::OPTIONS)
            .uri(format!("http://{}/Microsoft-Server-ActiveSync", srv.addr))
            .body(http_body_util::Full::new(Bytes::new()))
            .unwrap()
    };
    // Busy for three times the idle limit: requests every 300 ms keep it open.
    for _ in 0..10 {
        let r = send.send_request(options()).await.expect("the connection is still open");
        assert_eq!(r.status(), StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let started = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(10), conn).await.expect("the server closes the idle connection").unwrap().ok();
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(600), "closed after {waited:?}, before it was idle for the limit");
}
