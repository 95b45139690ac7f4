//! What a phone sends and what it reads back, built on the server's own WBXML codec
//! (`pushsync::wbxml`): requests as element trees, responses reduced to the few facts a
//! simulated device acts on. No I/O here.

use pushsync::wbxml::{Element, tag};

/// The Ping/Sync class of the folders watched.
pub const EMAIL_CLASS: &str = "Email";
/// ActiveSync folder type of the Inbox.
pub const INBOX_TYPE: &str = "2";
/// Marker in the Subject (and the `X-Pushsync-Loadtest` header) of every injected message.
pub const SUBJECT_MARK: &str = "pushsync-loadtest";
pub const ID_HEADER: &str = "X-Pushsync-Loadtest";

/// Body preference sent with Sync Options, like a phone does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BodyOptions {
    /// 1 plain text, 2 HTML, 4 MIME.
    pub body_type: u8,
    pub truncation: u32,
}

impl Default for BodyOptions {
    fn default() -> Self {
        BodyOptions { body_type: 1, truncation: 5120 }
    }
}

/// First Provision request: device information (14.1+) and the policy type.
pub fn provision_request(version: &str, model: &str) -> Element {
    let mut p = Element::new(tag::provision::PROVISION);
    if version >= "14.1" {
        p.push(
            Element::new(tag::settings::DEVICE_INFORMATION).with(
                Element::new(tag::settings::SET)
                    .with_text(tag::settings::MODEL, model)
                    .with_text(tag::settings::FRIENDLY_NAME, "pushsync load test")
                    .with_text(tag::settings::OS, "LoadTestOS 1.0")
                    .with_text(tag::settings::USER_AGENT, concat!("pushsync-loadtest/", env!("CARGO_PKG_VERSION"))),
            ),
        );
    }
    p.with(
        Element::new(tag::provision::POLICIES)
            .with(Element::new(tag::provision::POLICY).with_text(tag::provision::POLICY_TYPE, "MS-EAS-Provisioning-WBXML")),
    )
}

/// Second Provision request: acknowledges the temporary key.
pub fn provision_ack(temporary_key: &str) -> Element {
    Element::new(tag::provision::PROVISION).with(
        Element::new(tag::provision::POLICIES).with(
            Element::new(tag::provision::POLICY)
                .with_text(tag::provision::POLICY_TYPE, "MS-EAS-Provisioning-WBXML")
                .with_text(tag::provision::POLICY_KEY, temporary_key)
                .with_text(tag::provision::STATUS, "1"),
        ),
    )
}

/// (root Status, PolicyKey) of a Provision response.
pub fn parse_provision(doc: &Element) -> (Option<u32>, Option<String>) {
    let status = doc.child_text(tag::provision::STATUS).and_then(|s| s.trim().parse().ok());
    let key = doc
        .child(tag::provision::POLICIES)
        .and_then(|p| p.child(tag::provision::POLICY))
        .and_then(|p| p.child_text(tag::provision::POLICY_KEY))
        .map(|k| k.trim().to_string())
        .filter(|k| !k.is_empty());
    (status, key)
}

pub fn folder_sync_request(key: &str) -> Element {
    Element::new(tag::folder_hierarchy::FOLDER_SYNC).with_text(tag::folder_hierarchy::SYNC_KEY, key)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderSyncResult {
    pub status: Option<u32>,
    pub key: Option<String>,
    /// ServerId of the folder of type 2 (Inbox), when the response adds it.
    pub inbox: Option<String>,
}

pub fn parse_folder_sync(doc: &Element) -> FolderSyncResult {
    let status = doc.child_text(tag::folder_hierarchy::STATUS).and_then(|s| s.trim().parse().ok());
    let key = doc.child_text(tag::folder_hierarchy::SYNC_KEY).map(|k| k.trim().to_string());
    let inbox = doc.child(tag::folder_hierarchy::CHANGES).and_then(|c| {
        c.children_with(tag::folder_hierarchy::ADD)
            .find(|a| a.child_text(tag::folder_hierarchy::TYPE).is_some_and(|t| t.trim() == INBOX_TYPE))
            .and_then(|a| a.child_text(tag::folder_hierarchy::SERVER_ID))
            .map(|s| s.trim().to_string())
    });
    FolderSyncResult { status, key, inbox }
}

/// A Sync of one collection. With key `0` no Options are sent (the first request only asks
/// for a key); afterwards the body preference goes along, as phones do.
pub fn sync_request(collection: &str, key: &str, window: usize, body: Option<BodyOptions>) -> Element {
    let mut c =
        Element::new(tag::air_sync::COLLECTION).with_text(tag::air_sync::SYNC_KEY, key).with_text(tag::air_sync::COLLECTION_ID, collection);
    if key != "0" {
        c.push(Element::new(tag::air_sync::GET_CHANGES));
        c.push_text_child(tag::air_sync::WINDOW_SIZE, window.to_string());
        if let Some(b) = body {
            c.push(
                Element::new(tag::air_sync::OPTIONS).with_text(tag::air_sync::FILTER_TYPE, "0").with(
                    Element::new(tag::air_sync_base::BODY_PREFERENCE)
                        .with_text(tag::air_sync_base::TYPE, b.body_type.to_string())
                        .with_text(tag::air_sync_base::TRUNCATION_SIZE, b.truncation.to_string()),
                ),
            );
        }
    }
    Element::new(tag::air_sync::SYNC).with(Element::new(tag::air_sync::COLLECTIONS).with(c))
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncResult {
    /// The collection's Status (or the root Status of an error response).
    pub status: Option<u32>,
    pub key: Option<String>,
    pub more_available: bool,
    /// Server Adds in this window.
    pub adds: usize,
    /// Subjects of the added items (to recognise injected messages).
    pub subjects: Vec<String>,
}

pub fn parse_sync(doc: &Element) -> SyncResult {
    let root_status = doc.child_text(tag::air_sync::STATUS).and_then(|s| s.trim().parse().ok());
    let Some(c) = doc.child(tag::air_sync::COLLECTIONS).and_then(|c| c.child(tag::air_sync::COLLECTION)) else {
        return SyncResult { status: root_status, ..SyncResult::default() };
    };
    let mut r = SyncResult {
        status: c.child_text(tag::air_sync::STATUS).and_then(|s| s.trim().parse().ok()).or(root_status),
        key: c.child_text(tag::air_sync::SYNC_KEY).map(|k| k.trim().to_string()),
        more_available: c.child(tag::air_sync::MORE_AVAILABLE).is_some(),
        ..SyncResult::default()
    };
    if let Some(cmds) = c.child(tag::air_sync::COMMANDS) {
        for add in cmds.children_with(tag::air_sync::ADD) {
            r.adds += 1;
            if let Some(s) = add.child(tag::air_sync::APPLICATION_DATA).and_then(|d| d.child_text(tag::email::SUBJECT)) {
                r.subjects.push(s);
            }
        }
    }
    r
}

pub fn ping_request(heartbeat_secs: u32, folders: &[&str]) -> Element {
    let mut f = Element::new(tag::ping::FOLDERS);
    for id in folders {
        f.push(Element::new(tag::ping::FOLDER).with_text(tag::ping::ID, *id).with_text(tag::ping::CLASS, EMAIL_CLASS));
    }
    Element::new(tag::ping::PING).with_text(tag::ping::HEARTBEAT_INTERVAL, heartbeat_secs.to_string()).with(f)
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PingResult {
    pub status: Option<u32>,
    pub folders: Vec<String>,
    /// The server's limit, with Status 5.
    pub heartbeat: Option<u32>,
}

pub fn parse_ping(doc: &Element) -> PingResult {
    PingResult {
        status: doc.child_text(tag::ping::STATUS).and_then(|s| s.trim().parse().ok()),
        folders: doc
            .child(tag::ping::FOLDERS)
            .map(|f| f.children_with(tag::ping::FOLDER).filter_map(|e| e.text_content()).map(|s| s.trim().to_string()).collect())
            .unwrap_or_default(),
        heartbeat: doc.child_text(tag::ping::HEARTBEAT_INTERVAL).and_then(|s| s.trim().parse().ok()),
    }
}

/// GetItemEstimate for one collection at `key` (14.0+ form).
pub fn item_estimate_request(collection: &str, key: &str) -> Element {
    Element::new(tag::get_item_estimate::GET_ITEM_ESTIMATE).with(
        Element::new(tag::get_item_estimate::COLLECTIONS).with(
            Element::new(tag::get_item_estimate::COLLECTION)
                .with_text(tag::air_sync::SYNC_KEY, key)
                .with_text(tag::get_item_estimate::COLLECTION_ID, collection)
                .with(Element::new(tag::air_sync::OPTIONS).with_text(tag::air_sync::FILTER_TYPE, "0")),
        ),
    )
}

/// The estimate of the first collection, if the server gave one.
pub fn parse_item_estimate(doc: &Element) -> Option<u64> {
    doc.child(tag::get_item_estimate::RESPONSE)
        .and_then(|r| r.child(tag::get_item_estimate::COLLECTION))
        .and_then(|c| c.child_text(tag::get_item_estimate::ESTIMATE))
        .and_then(|e| e.trim().parse().ok())
}

/// The Subject of message `seq` of run `run`.
pub fn subject(run: &str, seq: u64) -> String {
    format!("{SUBJECT_MARK} {run}#{seq}")
}

/// The sequence number of a message of run `run`, from its Subject; `None` for anything else
/// (including messages of earlier runs left in a reused mailbox).
pub fn parse_subject(run: &str, subject: &str) -> Option<u64> {
    let rest = subject.split_once(SUBJECT_MARK)?.1.trim_start();
    let token = rest.split_whitespace().next()?;
    let (r, seq) = token.split_once('#')?;
    if r != run {
        return None;
    }
    seq.parse().ok()
}

/// An RFC 5322 message carrying the id in its Subject and in a header.
pub fn message(run: &str, seq: u64, to: &str) -> Vec<u8> {
    let date = chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S +0000");
    format!(
        "From: Load Tester <loadtest@loadtest.invalid>\r\n\
         To: <{to}>\r\n\
         Subject: {subject}\r\n\
         Date: {date}\r\n\
         Message-ID: <{run}.{seq}@loadtest.invalid>\r\n\
         {ID_HEADER}: {run}#{seq}\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         \r\n\
         Message {seq} of load test run {run}.\r\n\
         A phone that shows this quickly got its push.\r\n",
        subject = subject(run, seq)
    )
    .into_bytes()
}

/// [`message`] with at least `size` bytes: filler text lines are added to the body (for
/// seeding folders with messages of a realistic size).
pub fn message_of_size(run: &str, seq: u64, to: &str, size: usize) -> Vec<u8> {
    let mut m = message(run, seq, to);
    let mut line = 0usize;
    while m.len() < size {
        line += 1;
        m.extend_from_slice(
            format!("Line {line:04} of filler text so that this message has the size of a typical short email.\r\n").as_bytes(),
        );
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use pushsync::wbxml::{decode, encode};

    #[test]
    fn subjects_round_trip_and_ignore_other_runs() {
        let s = subject("ab12cd34", 42);
        assert_eq!(parse_subject("ab12cd34", &s), Some(42));
        assert_eq!(parse_subject("ffffffff", &s), None);
        assert_eq!(parse_subject("ab12cd34", "Re: pushsync-loadtest ab12cd34#7 extra"), Some(7));
        assert_eq!(parse_subject("ab12cd34", "hello"), None);
        let raw = String::from_utf8(message("ab12cd34", 42, "u@example.test")).unwrap();
        assert!(raw.contains("Subject: pushsync-loadtest ab12cd34#42\r\n"));
        assert!(raw.contains("X-Pushsync-Loadtest: ab12cd34#42\r\n"));
        assert!(raw.contains("\r\n\r\n"));
        let big = message_of_size("ab12cd34", 1, "u@example.test", 2048);
        assert!(big.len() >= 2048 && big.len() < 2048 + 100 && big.ends_with(b"\r\n"));
    }

    #[test]
    fn requests_survive_the_codec() {
        for e in [
            provision_request("16.1", "M"),
            provision_ack("123"),
            folder_sync_request("0"),
            sync_request("5", "0", 100, Some(BodyOptions::default())),
            sync_request("5", "3", 512, Some(BodyOptions::default())),
            ping_request(900, &["5"]),
            item_estimate_request("5", "1"),
        ] {
            assert_eq!(decode(&encode(&e)).unwrap(), e);
        }
        let first = sync_request("5", "0", 100, Some(BodyOptions::default()));
        let c = first.child(tag::air_sync::COLLECTIONS).unwrap().child(tag::air_sync::COLLECTION).unwrap();
        assert!(c.child(tag::air_sync::OPTIONS).is_none() && c.child(tag::air_sync::WINDOW_SIZE).is_none());
    }

    #[test]
    fn responses_are_read() {
        let ping = Element::new(tag::ping::PING)
            .with_text(tag::ping::STATUS, "2")
            .with(Element::new(tag::ping::FOLDERS).with_text(tag::ping::FOLDER, "5"));
        assert_eq!(parse_ping(&ping), PingResult { status: Some(2), folders: vec!["5".into()], heartbeat: None });

        let add = |subject: &str| {
            Element::new(tag::air_sync::ADD)
                .with_text(tag::air_sync::SERVER_ID, "5:1")
                .with(Element::new(tag::air_sync::APPLICATION_DATA).with_text(tag::email::SUBJECT, subject))
        };
        let sync = Element::new(tag::air_sync::SYNC).with(
            Element::new(tag::air_sync::COLLECTIONS).with(
                Element::new(tag::air_sync::COLLECTION)
                    .with_text(tag::air_sync::SYNC_KEY, "7")
                    .with_text(tag::air_sync::COLLECTION_ID, "5")
                    .with_text(tag::air_sync::STATUS, "1")
                    .with(Element::new(tag::air_sync::MORE_AVAILABLE))
                    .with(Element::new(tag::air_sync::COMMANDS).with(add("a")).with(add("b"))),
            ),
        );
        let r = parse_sync(&decode(&encode(&sync)).unwrap());
        assert_eq!(
            r,
            SyncResult { status: Some(1), key: Some("7".into()), more_available: true, adds: 2, subjects: vec!["a".into(), "b".into()] }
        );

        let fs = Element::new(tag::folder_hierarchy::FOLDER_SYNC)
            .with_text(tag::folder_hierarchy::STATUS, "1")
            .with_text(tag::folder_hierarchy::SYNC_KEY, "1")
            .with(
                Element::new(tag::folder_hierarchy::CHANGES)
                    .with(
                        Element::new(tag::folder_hierarchy::ADD)
                            .with_text(tag::folder_hierarchy::SERVER_ID, "3")
                            .with_text(tag::folder_hierarchy::TYPE, "4"),
                    )
                    .with(
                        Element::new(tag::folder_hierarchy::ADD)
                            .with_text(tag::folder_hierarchy::SERVER_ID, "5")
                            .with_text(tag::folder_hierarchy::TYPE, "2"),
                    ),
            );
        assert_eq!(parse_folder_sync(&fs), FolderSyncResult { status: Some(1), key: Some("1".into()), inbox: Some("5".into()) });
    }
}
