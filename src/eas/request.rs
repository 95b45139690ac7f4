//! The HTTP form of an ActiveSync request (MS-ASHTTP): which command, for which user and
//! device, in which protocol version, with which policy key.
//!
//! Parses both the plain query (`?Cmd=Sync&User=…&DeviceId=…&DeviceType=…`) and the
//! base64-encoded binary query some clients send instead. Pure parsing: no I/O, no state.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use http::HeaderMap;

use super::{Command, ProtocolVersion};

/// Longest DeviceId/DeviceType accepted; MS-ASHTTP allows 32 characters, some clients send
/// a little more, nothing legitimate sends hundreds.
const MAX_ID_LEN: usize = 64;

/// What the query string and headers say about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestLine {
    pub command: Command,
    /// The `User` parameter (informational: identity comes from the Authorization header).
    pub user: Option<String>,
    pub device_id: String,
    pub device_type: String,
    pub version: ProtocolVersion,
    /// `X-MS-PolicyKey` or the base64 query's policy key; `None` when absent or 0.
    pub policy_key: Option<u32>,
    pub params: CommandParams,
    pub user_agent: Option<String>,
}

/// The optional per-command parameters of the query (MS-ASHTTP 2.2.1.1.1.1.3).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandParams {
    pub attachment_name: Option<String>,
    pub collection_id: Option<String>,
    pub item_id: Option<String>,
    pub long_id: Option<String>,
    pub occurrence: Option<String>,
    /// `SaveInSent=T` (plain form) or Options bit 0x01 (base64 form).
    pub save_in_sent: bool,
    /// `MS-ASAcceptMultiPart: T` or Options bit 0x02.
    pub accept_multipart: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestLineError {
    #[error("missing Cmd parameter")]
    MissingCommand,
    #[error("unknown command {0:?}")]
    UnknownCommand(String),
    #[error("missing DeviceId parameter")]
    MissingDeviceId,
    #[error("invalid DeviceId or DeviceType")]
    InvalidDeviceId,
    #[error("missing DeviceType parameter")]
    MissingDeviceType,
    #[error("missing MS-ASProtocolVersion")]
    MissingVersion,
    #[error("unsupported protocol version {0:?}")]
    UnsupportedVersion(String),
    #[error("malformed base64 query: {0}")]
    MalformedBase64Query(&'static str),
    #[error("malformed query string")]
    MalformedQuery,
}

impl RequestLine {
    /// Parses the query string (without `?`) and the headers.
    pub fn parse(query: &str, headers: &HeaderMap) -> Result<RequestLine, RequestLineError> {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
        let user_agent = header("user-agent").map(str::to_string);
        let accept_multipart = header("ms-asacceptmultipart").is_some_and(|v| v.eq_ignore_ascii_case("t"));
        // Base64 never contains '&', and '=' only as trailing padding.
        let plain = query.is_empty() || query.contains('&') || query.to_ascii_lowercase().starts_with("cmd=");
        let mut line = if plain { parse_plain(query, headers)? } else { parse_base64(query)? };
        line.user_agent = user_agent;
        line.params.accept_multipart |= accept_multipart;
        Ok(line)
    }
}

fn parse_plain(query: &str, headers: &HeaderMap) -> Result<RequestLine, RequestLineError> {
    let mut cmd = None;
    let mut user = None;
    let mut device_id = None;
    let mut device_type = None;
    let mut params = CommandParams::default();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v).ok_or(RequestLineError::MalformedQuery)?;
        // Parameter names are matched case-insensitively: clients differ.
        match k.to_ascii_lowercase().as_str() {
            "cmd" => cmd = Some(v),
            "user" => user = Some(v),
            "deviceid" => device_id = Some(v),
            "devicetype" => device_type = Some(v),
            "attachmentname" => params.attachment_name = Some(v),
            "collectionid" => params.collection_id = Some(v),
            "itemid" => params.item_id = Some(v),
            "longid" => params.long_id = Some(v),
            "occurrence" => params.occurrence = Some(v),
            "saveinsent" => params.save_in_sent = v.eq_ignore_ascii_case("t"),
            _ => {} // unknown parameters are tolerated
        }
    }
    let cmd = cmd.filter(|c| !c.is_empty()).ok_or(RequestLineError::MissingCommand)?;
    let command = Command::from_name(&cmd).ok_or(RequestLineError::UnknownCommand(cmd))?;
    let device_id = device_id.filter(|d| !d.is_empty()).ok_or(RequestLineError::MissingDeviceId)?;
    let device_type = device_type.filter(|d| !d.is_empty()).ok_or(RequestLineError::MissingDeviceType)?;
    if !valid_id(&device_id) || !valid_id(&device_type) {
        return Err(RequestLineError::InvalidDeviceId);
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    let version_text = header("ms-asprotocolversion").ok_or(RequestLineError::MissingVersion)?;
    let version = ProtocolVersion::parse(version_text).ok_or_else(|| RequestLineError::UnsupportedVersion(version_text.to_string()))?;
    let policy_key = header("x-ms-policykey").and_then(|k| k.parse::<u32>().ok()).filter(|&k| k != 0);
    Ok(RequestLine { command, user, device_id, device_type, version, policy_key, params, user_agent: None })
}

/// The binary query of MS-ASHTTP 2.2.1.1.1.1: version, command code, locale, device id,
/// policy key, device type, then tagged parameters.
fn parse_base64(query: &str) -> Result<RequestLine, RequestLineError> {
    use RequestLineError::MalformedBase64Query as Bad;
    let text = percent_decode(query).ok_or(Bad("not percent-encoded text"))?;
    if text.len() > 4096 {
        return Err(Bad("longer than 4096 characters"));
    }
    let bytes = BASE64.decode(text.trim().as_bytes()).map_err(|_| Bad("not base64"))?;
    let mut r = bytes.as_slice();
    let mut take = |n: usize| -> Result<&[u8], RequestLineError> {
        if r.len() < n {
            return Err(Bad("ends early"));
        }
        let (head, tail) = r.split_at(n);
        r = tail;
        Ok(head)
    };
    let version_byte = take(1)?[0];
    let version = ProtocolVersion::from_byte(version_byte)
        .ok_or_else(|| RequestLineError::UnsupportedVersion(format!("{}.{}", version_byte / 10, version_byte % 10)))?;
    let code = take(1)?[0];
    let command = Command::from_code(code).ok_or_else(|| RequestLineError::UnknownCommand(format!("code {code}")))?;
    let _locale = take(2)?;
    let id_len = take(1)?[0] as usize;
    let device_id = id_text(take(id_len)?);
    let pk_len = take(1)?[0] as usize;
    let policy_key = match pk_len {
        0 => None,
        4 => {
            let b = take(4)?;
            Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]])).filter(|&k| k != 0)
        }
        _ => return Err(Bad("policy key length is neither 0 nor 4")),
    };
    let type_len = take(1)?[0] as usize;
    let device_type = String::from_utf8(take(type_len)?.to_vec()).map_err(|_| Bad("device type is not UTF-8"))?;
    let mut user = None;
    let mut params = CommandParams::default();
    while let Ok(t) = take(1) {
        let tag = t[0];
        let len = take(1)?[0] as usize;
        let value = take(len)?;
        let text = || String::from_utf8(value.to_vec()).map_err(|_| Bad("parameter is not UTF-8"));
        match parameter_name(tag) {
            Some("AttachmentName") => params.attachment_name = Some(text()?),
            Some("CollectionId") => params.collection_id = Some(text()?),
            Some("ItemId") => params.item_id = Some(text()?),
            Some("LongId") => params.long_id = Some(text()?),
            Some("Occurrence") => params.occurrence = Some(text()?),
            Some("User") => user = Some(text()?),
            Some("Options") => {
                let flags = value.first().copied().unwrap_or(0);
                params.save_in_sent = flags & 0x01 != 0;
                params.accept_multipart = flags & 0x02 != 0;
            }
            _ => {} // unknown parameters are tolerated
        }
    }
    if device_id.is_empty() {
        return Err(RequestLineError::MissingDeviceId);
    }
    if device_type.is_empty() {
        return Err(RequestLineError::MissingDeviceType);
    }
    if !valid_id(&device_id) || !valid_id(&device_type) {
        return Err(RequestLineError::InvalidDeviceId);
    }
    Ok(RequestLine { command, user, device_id, device_type, version, policy_key, params, user_agent: None })
}

fn parameter_name(code: u8) -> Option<&'static str> {
    super::QUERY_PARAMETERS.iter().find(|(c, _)| *c == code).map(|(_, n)| *n)
}

/// The base64 form carries the device id as bytes (often a GUID); printable ASCII stays as
/// is, anything else becomes upper-case hex so it can name a device in logs and the admin API.
fn id_text(bytes: &[u8]) -> String {
    if !bytes.is_empty() && bytes.iter().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(b)) {
        String::from_utf8_lossy(bytes).into_owned()
    } else {
        bytes.iter().map(|b| format!("{b:02X}")).collect()
    }
}

fn valid_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_ID_LEN && s.chars().all(|c| c.is_ascii_graphic())
}

/// `application/x-www-form-urlencoded` decoding: `%XX` and `+`. `None` for bad escapes or
/// non-UTF-8 results.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let v = u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
                out.push(v);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(version: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("MS-ASProtocolVersion", HeaderValue::from_str(version).unwrap());
        h
    }

    #[test]
    fn parses_the_plain_query() {
        let mut h = headers("14.1");
        h.insert("X-MS-PolicyKey", HeaderValue::from_static("3942919513"));
        let line = RequestLine::parse("Cmd=Sync&User=alice%40example.test&DeviceId=ApplDNPX123&DeviceType=iPhone&Extra=1", &h).unwrap();
        assert_eq!(line.command, Command::Sync);
        assert_eq!(line.user.as_deref(), Some("alice@example.test"));
        assert_eq!(line.device_id, "ApplDNPX123");
        assert_eq!(line.device_type, "iPhone");
        assert_eq!(line.version, ProtocolVersion::V14_1);
        assert_eq!(line.policy_key, Some(3942919513));
    }

    #[test]
    fn plain_query_errors() {
        let h = headers("14.1");
        assert_eq!(RequestLine::parse("User=a&DeviceId=d&DeviceType=t", &h), Err(RequestLineError::MissingCommand));
        assert_eq!(
            RequestLine::parse("Cmd=Frobnicate&DeviceId=d&DeviceType=t", &h),
            Err(RequestLineError::UnknownCommand("Frobnicate".into()))
        );
        assert_eq!(RequestLine::parse("Cmd=Sync&DeviceType=t", &h), Err(RequestLineError::MissingDeviceId));
        assert_eq!(RequestLine::parse("Cmd=Sync&DeviceId=d", &h), Err(RequestLineError::MissingDeviceType));
        assert_eq!(
            RequestLine::parse("Cmd=Sync&DeviceId=d&DeviceType=t", &headers("2.5")),
            Err(RequestLineError::UnsupportedVersion("2.5".into()))
        );
        assert_eq!(RequestLine::parse("Cmd=Sync&DeviceId=d&DeviceType=t", &HeaderMap::new()), Err(RequestLineError::MissingVersion));
        assert_eq!(RequestLine::parse("Cmd=Sync&DeviceId=%ZZ&DeviceType=t", &h), Err(RequestLineError::MalformedQuery));
        let long = "x".repeat(65);
        assert_eq!(RequestLine::parse(&format!("Cmd=Sync&DeviceId={long}&DeviceType=t"), &h), Err(RequestLineError::InvalidDeviceId));
    }

    /// Builds a base64 query the way MS-ASHTTP lays it out.
    fn base64_query(version: u8, code: u8, device_id: &[u8], policy_key: Option<u32>, device_type: &str, params: &[(u8, &[u8])]) -> String {
        let mut b = vec![version, code, 0x09, 0x04, device_id.len() as u8];
        b.extend_from_slice(device_id);
        match policy_key {
            Some(k) => {
                b.push(4);
                b.extend_from_slice(&k.to_le_bytes());
            }
            None => b.push(0),
        }
        b.push(device_type.len() as u8);
        b.extend_from_slice(device_type.as_bytes());
        for (tag, value) in params {
            b.push(*tag);
            b.push(value.len() as u8);
            b.extend_from_slice(value);
        }
        BASE64.encode(b)
    }

    #[test]
    fn parses_the_base64_query() {
        let ping = Command::Ping.code().unwrap();
        let q = base64_query(141, ping, &[0xB3, 0x01, 0x02, 0x03], Some(12345), "WP8", &[(8, b"alice"), (7, &[0x03])]);
        let line = RequestLine::parse(&q, &HeaderMap::new()).unwrap();
        assert_eq!(line.command, Command::Ping);
        assert_eq!(line.version, ProtocolVersion::V14_1);
        assert_eq!(line.device_id, "B3010203");
        assert_eq!(line.device_type, "WP8");
        assert_eq!(line.policy_key, Some(12345));
        assert_eq!(line.user.as_deref(), Some("alice"));
        assert!(line.params.save_in_sent && line.params.accept_multipart);

        // Percent-encoded base64 (as it travels in a URL) parses the same.
        let encoded = q.replace('+', "%2B").replace('/', "%2F").replace('=', "%3D");
        assert_eq!(RequestLine::parse(&encoded, &HeaderMap::new()).unwrap().device_id, "B3010203");
    }

    #[test]
    fn base64_query_errors() {
        let h = HeaderMap::new();
        assert!(matches!(RequestLine::parse("!!!!", &h), Err(RequestLineError::MalformedBase64Query(_))));
        let q = base64_query(141, Command::Sync.code().unwrap(), b"dev", None, "t", &[]);
        let bytes = BASE64.decode(&q).unwrap();
        for cut in 0..bytes.len() {
            let truncated = BASE64.encode(&bytes[..cut]);
            assert!(RequestLine::parse(&truncated, &h).is_err(), "truncated to {cut} bytes parsed");
        }
        let q = base64_query(25, Command::Sync.code().unwrap(), b"dev", None, "t", &[]);
        assert!(matches!(RequestLine::parse(&q, &h), Err(RequestLineError::UnsupportedVersion(_))));
        let q = base64_query(141, 200, b"dev", None, "t", &[]);
        assert!(matches!(RequestLine::parse(&q, &h), Err(RequestLineError::UnknownCommand(_))));
    }
}
