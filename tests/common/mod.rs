//! Test harness: a real pushsync server on loopback port 0 with a temporary data directory,
//! and a simulated phone that speaks ActiveSync (WBXML over HTTP) to it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use pushsync::app::App;
use pushsync::config::Config;
use pushsync::server::RunningServer;
use pushsync::wbxml::{self, Element, Tag, tag};

pub const PASSWORD: &str = "correct horse";

pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub server: Option<RunningServer>,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub token: String,
    tweak: Arc<dyn Fn(&mut Config) + Send + Sync>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl Fn(&mut Config) + Send + Sync + 'static) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let tweak: Arc<dyn Fn(&mut Config) + Send + Sync> = Arc::new(tweak);
        let server = Self::boot(dir.path(), &tweak).await;
        TestServer {
            addr: server.listen_addr(),
            admin: server.admin_addr(),
            token: server.admin_token.clone(),
            server: Some(server),
            dir,
            tweak,
        }
    }

    fn config(dir: &std::path::Path, tweak: &Arc<dyn Fn(&mut Config) + Send + Sync>) -> Config {
        let mut config = Config {
            data_dir: dir.to_path_buf(),
            listen: "127.0.0.1:0".parse().unwrap(),
            admin_listen: "127.0.0.1:0".parse().unwrap(),
            plain_http: true,
            ..Default::default()
        };
        tweak(&mut config);
        config
    }

    async fn boot(dir: &std::path::Path, tweak: &Arc<dyn Fn(&mut Config) + Send + Sync>) -> RunningServer {
        let app = App::open(Self::config(dir, tweak)).await.expect("open app");
        pushsync::server::start(app).await.expect("start server")
    }

    pub fn app(&self) -> &Arc<App> {
        &self.server.as_ref().expect("running").app
    }

    /// Stops the server gracefully and starts it again on the same data directory (new ports).
    pub async fn restart(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
        let server = Self::boot(self.dir.path(), &self.tweak).await;
        self.addr = server.listen_addr();
        self.admin = server.admin_addr();
        self.token = server.admin_token.clone();
        self.server = Some(server);
    }

    pub async fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
    }

    /// Creates a user with Mobile Sync enabled.
    pub async fn add_user(&self, login: &str) {
        self.add_user_sync(login, true).await;
    }

    pub async fn add_user_sync(&self, login: &str, sync: bool) {
        let app = self.app();
        let store = app.embedded.as_ref().expect("embedded store");
        store
            .add_user(pushsync::store::embedded::NewUser {
                login: login.into(),
                email: Some(format!("{login}@example.test")),
                display_name: Some(login.to_uppercase()),
                password: PASSWORD.into(),
            })
            .await
            .expect("add user");
        if sync {
            app.admin.set_sync_access(login, true, "test").await.expect("enable sync");
        }
    }

    pub async fn deliver(&self, to: &str, subject: &str) -> u32 {
        let raw = message(to, subject, "Hello from the tests.");
        self.deliver_raw(to, &raw).await
    }

    pub async fn deliver_raw(&self, to: &str, raw: &[u8]) -> u32 {
        let app = self.app();
        pushsync::delivery::deliver_local(app, app.embedded.as_ref().expect("embedded"), to, raw).await.expect("deliver").uid
    }

    pub fn phone(&self, user: &str, device_id: &str) -> Phone {
        Phone::new(self.addr, user, PASSWORD, device_id)
    }

    /// Calls the admin API; returns status and JSON (or text).
    pub async fn admin_call(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
        token: Option<&str>,
    ) -> (StatusCode, String) {
        let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let mut b = Request::builder().method(method).uri(format!("http://{}{}", self.admin, path));
        if let Some(t) = token.or(Some(self.token.as_str())) {
            b = b.header("Authorization", format!("Bearer {t}"));
        }
        let payload = match body {
            Some(v) => {
                b = b.header("Content-Type", "application/json");
                Bytes::from(v.to_string())
            }
            None => Bytes::new(),
        };
        let r = client.request(b.body(Full::new(payload)).unwrap()).await.expect("admin request");
        let status = r.status();
        let body = r.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.app.shutdown.cancel();
        }
    }
}

pub fn message(to: &str, subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: Sender <sender@example.test>\r\nTo: {to}\r\nSubject: {subject}\r\nDate: Thu, 26 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{:x}@example.test>\r\n\r\n{body}\r\n",
        rand::random::<u64>()
    )
    .into_bytes()
}

/// A response as the phone sees it.
pub struct EasResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl EasResponse {
    pub fn doc(&self) -> Element {
        assert_eq!(self.status, StatusCode::OK, "HTTP status; body: {}", String::from_utf8_lossy(&self.body));
        wbxml::decode(&self.body).unwrap_or_else(|e| panic!("response is not WBXML ({e}): {:?}", &self.body[..self.body.len().min(64)]))
    }

    /// The root Status, if any.
    pub fn status_code(&self) -> Option<String> {
        let doc = self.doc();
        doc.elements().find(|e| e.tag.name() == Some("Status")).and_then(|e| e.text_content())
    }
}

/// A simulated phone.
pub struct Phone {
    pub addr: SocketAddr,
    pub user: String,
    pub password: String,
    pub device_id: String,
    pub device_type: String,
    pub version: String,
    pub policy_key: Option<u32>,
    pub folder_key: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Phone {
    pub fn new(addr: SocketAddr, user: &str, password: &str, device_id: &str) -> Phone {
        Phone {
            addr,
            user: user.into(),
            password: password.into(),
            device_id: device_id.into(),
            device_type: "iPhone".into(),
            version: "16.1".into(),
            policy_key: None,
            folder_key: "0".into(),
            client: Client::builder(TokioExecutor::new()).pool_max_idle_per_host(4).build_http(),
        }
    }

    pub async fn raw(&self, method: Method, query: &str, headers: &[(&str, String)], body: Bytes) -> EasResponse {
        let mut b = Request::builder().method(method).uri(format!("http://{}/Microsoft-Server-ActiveSync{}", self.addr, query));
        for (k, v) in headers {
            b = b.header(*k, v);
        }
        let r = tokio::time::timeout(Duration::from_secs(120), self.client.request(b.body(Full::new(body)).unwrap()))
            .await
            .expect("request timed out")
            .expect("request failed");
        let status = r.status();
        let headers = r.headers().clone();
        let body = r.into_body().collect().await.expect("body").to_bytes();
        EasResponse { status, headers, body }
    }

    pub fn auth_header(&self) -> String {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", self.user, self.password)))
    }

    /// POSTs a command with a WBXML body (or none).
    pub async fn post(&self, cmd: &str, body: Option<&Element>) -> EasResponse {
        self.post_extra(cmd, body, "").await
    }

    pub async fn post_extra(&self, cmd: &str, body: Option<&Element>, extra_query: &str) -> EasResponse {
        let mut headers = vec![
            ("Authorization", self.auth_header()),
            ("MS-ASProtocolVersion", self.version.clone()),
            ("Content-Type", "application/vnd.ms-sync.wbxml".to_string()),
            ("User-Agent", "pushsync-test/1.0".to_string()),
        ];
        if let Some(k) = self.policy_key {
            headers.push(("X-MS-PolicyKey", k.to_string()));
        }
        let query = format!("?Cmd={cmd}&User={}&DeviceId={}&DeviceType={}{extra_query}", self.user, self.device_id, self.device_type);
        let bytes = body.map(|b| Bytes::from(wbxml::encode(b))).unwrap_or_default();
        self.raw(Method::POST, &query, &headers, bytes).await
    }

    /// The two-step Provision handshake; returns the final key.
    pub async fn provision(&mut self) -> u32 {
        let policy_type = || {
            Element::new(tag::provision::POLICIES)
                .with(Element::new(tag::provision::POLICY).with_text(tag::provision::POLICY_TYPE, "MS-EAS-Provisioning-WBXML"))
        };
        let mut first = Element::new(tag::provision::PROVISION);
        if self.version.as_str() >= "14.1" {
            first.push(
                Element::new(tag::settings::DEVICE_INFORMATION).with(
                    Element::new(tag::settings::SET)
                        .with_text(tag::settings::MODEL, "TestPhone 1")
                        .with_text(tag::settings::FRIENDLY_NAME, "Test phone")
                        .with_text(tag::settings::OS, "TestOS 1.0"),
                ),
            );
        }
        first.push(policy_type());
        let r = self.post("Provision", Some(&first)).await.doc();
        assert_eq!(r.child_text(tag::provision::STATUS).as_deref(), Some("1"), "{}", wbxml::to_xml(&r));
        let policy = r.child(tag::provision::POLICIES).and_then(|p| p.child(tag::provision::POLICY)).expect("policy");
        let temp = policy.child_text(tag::provision::POLICY_KEY).expect("temporary key");
        let ack = Element::new(tag::provision::PROVISION).with(
            Element::new(tag::provision::POLICIES).with(
                Element::new(tag::provision::POLICY)
                    .with_text(tag::provision::POLICY_TYPE, "MS-EAS-Provisioning-WBXML")
                    .with_text(tag::provision::POLICY_KEY, temp)
                    .with_text(tag::provision::STATUS, "1"),
            ),
        );
        let r = self.post("Provision", Some(&ack)).await.doc();
        let key: u32 = r
            .child(tag::provision::POLICIES)
            .and_then(|p| p.child(tag::provision::POLICY))
            .and_then(|p| p.child_text(tag::provision::POLICY_KEY))
            .expect("final key")
            .parse()
            .unwrap();
        self.policy_key = Some(key);
        key
    }

    /// FolderSync from the phone's key; returns the response.
    pub async fn folder_sync(&mut self) -> Element {
        let req = Element::new(tag::folder_hierarchy::FOLDER_SYNC).with_text(tag::folder_hierarchy::SYNC_KEY, self.folder_key.clone());
        let r = self.post("FolderSync", Some(&req)).await.doc();
        if let Some(k) = r.child_text(tag::folder_hierarchy::SYNC_KEY) {
            self.folder_key = k;
        }
        r
    }

    /// Provision + FolderSync; returns (display name, server id, type) of every folder.
    pub async fn setup(&mut self) -> Vec<(String, String, String)> {
        self.provision().await;
        let r = self.folder_sync().await;
        folders_of(&r)
    }

    /// The collection id of the folder with this ActiveSync type (2 = Inbox, ...).
    pub async fn folder_id(&mut self, eas_type: &str) -> String {
        let r = self.setup().await;
        r.into_iter().find(|(_, _, t)| t == eas_type).map(|(_, id, _)| id).expect("folder of that type")
    }
}

pub fn folders_of(folder_sync: &Element) -> Vec<(String, String, String)> {
    folder_sync
        .child(tag::folder_hierarchy::CHANGES)
        .map(|c| {
            c.children_with(tag::folder_hierarchy::ADD)
                .map(|a| {
                    (
                        a.child_text(tag::folder_hierarchy::DISPLAY_NAME).unwrap_or_default(),
                        a.child_text(tag::folder_hierarchy::SERVER_ID).unwrap_or_default(),
                        a.child_text(tag::folder_hierarchy::TYPE).unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A Sync request for one collection.
/// A Ping request watching these Email folders.
pub fn ping(heartbeat: u32, folders: &[&str]) -> Element {
    let mut f = Element::new(tag::ping::FOLDERS);
    for id in folders {
        f.push(Element::new(tag::ping::FOLDER).with_text(tag::ping::ID, *id).with_text(tag::ping::CLASS, "Email"));
    }
    Element::new(tag::ping::PING).with_text(tag::ping::HEARTBEAT_INTERVAL, heartbeat.to_string()).with(f)
}

/// The folder ids a Ping response names.
pub fn ping_folders(doc: &Element) -> Vec<String> {
    doc.child(tag::ping::FOLDERS).map(|f| f.children_with(tag::ping::FOLDER).filter_map(|e| e.text_content()).collect()).unwrap_or_default()
}

pub fn sync_request(collection: &str, key: &str, window: usize, extra: Vec<Element>) -> Element {
    let mut c = Element::new(tag::air_sync::COLLECTION)
        .with_text(tag::air_sync::SYNC_KEY, key)
        .with_text(tag::air_sync::COLLECTION_ID, collection)
        .with_text(tag::air_sync::WINDOW_SIZE, window.to_string());
    for e in extra {
        c.push(e);
    }
    Element::new(tag::air_sync::SYNC).with(Element::new(tag::air_sync::COLLECTIONS).with(c))
}

pub fn body_preference(body_type: &str, truncation: Option<u32>) -> Element {
    let mut p = Element::new(tag::air_sync_base::BODY_PREFERENCE).with_text(tag::air_sync_base::TYPE, body_type);
    if let Some(t) = truncation {
        p.push_text_child(tag::air_sync_base::TRUNCATION_SIZE, t.to_string());
    }
    Element::new(tag::air_sync::OPTIONS).with(p)
}

/// The one collection of a Sync response.
pub fn collection(sync_response: &Element) -> &Element {
    sync_response
        .child(tag::air_sync::COLLECTIONS)
        .and_then(|c| c.child(tag::air_sync::COLLECTION))
        .unwrap_or_else(|| panic!("no collection in {}", wbxml::to_xml(sync_response)))
}

/// (command tag name, ServerId) of every server change in a collection.
pub fn commands(c: &Element) -> Vec<(String, String)> {
    c.child(tag::air_sync::COMMANDS)
        .map(|cmds| {
            cmds.elements()
                .map(|e| (e.tag.name().unwrap_or("?").to_string(), e.child_text(tag::air_sync::SERVER_ID).unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default()
}

pub fn text_of(e: &Element, t: Tag) -> String {
    e.child_text(t).unwrap_or_default()
}

pub mod dovecot;

impl TestServer {
    /// A server in front of the IMAP server `dovecot` (the IMAP store), with tweaks.
    pub async fn start_imap(dovecot: &dovecot::Dovecot, tweak: impl Fn(&mut Config) + Send + Sync + 'static) -> TestServer {
        let url = dovecot.url();
        Self::start_with(move |c| {
            c.store = url.clone();
            c.imap.operation_timeout_secs = 10;
            tweak(c);
        })
        .await
    }

    /// Mobile Sync entitlement for a user that exists only on the IMAP server.
    pub async fn enable_sync(&self, login: &str) {
        self.app().admin.set_sync_access(login, true, "test").await.expect("enable sync");
    }
}
