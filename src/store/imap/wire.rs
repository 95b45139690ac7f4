//! The bytes of IMAP that are ours to write: quoted strings and literals, modified UTF-7
//! mailbox names, dates, UID sets, keywords. Pure functions, no I/O; parsing responses is
//! `imap-proto`'s job (see [`super::session`]).

use base64::Engine as _;
use base64::alphabet::Alphabet;
use base64::engine::{GeneralPurpose, GeneralPurposeConfig};

use crate::store::Uid;

/// A command argument: an atom-safe or quoted string, or a literal when it cannot be quoted.
pub enum Arg {
    Text(String),
    Literal(Vec<u8>),
}

/// Whether `s` can be sent as a quoted string (7-bit, no CR/LF/NUL, not too long).
fn quotable(s: &[u8]) -> bool {
    s.len() <= 1024 && s.iter().all(|&b| b != b'\r' && b != b'\n' && b != 0 && b < 0x80)
}

/// An IMAP string argument: quoted when possible, else a literal.
pub fn string(s: &str) -> Arg {
    if quotable(s.as_bytes()) {
        let mut out = String::with_capacity(s.len() + 2);
        out.push('"');
        for c in s.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
        Arg::Text(out)
    } else {
        Arg::Literal(s.as_bytes().to_vec())
    }
}

/// A mailbox name argument (modified UTF-7, quoted).
pub fn mailbox(name: &str) -> Arg {
    string(&encode_mailbox(name))
}

fn mutf7_engine() -> &'static GeneralPurpose {
    static ENGINE: std::sync::OnceLock<GeneralPurpose> = std::sync::OnceLock::new();
    ENGINE.get_or_init(|| {
        // RFC 3501 5.1.3: base64 with ',' instead of '/', no padding.
        let alphabet = Alphabet::new("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,").expect("valid alphabet");
        GeneralPurpose::new(
            &alphabet,
            GeneralPurposeConfig::new().with_encode_padding(false).with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
        )
    })
}

/// UTF-8 → modified UTF-7 (RFC 3501 5.1.3).
pub fn encode_mailbox(name: &str) -> String {
    let engine = mutf7_engine();
    let mut out = String::with_capacity(name.len());
    let mut pending: Vec<u16> = Vec::new();
    let flush = |pending: &mut Vec<u16>, out: &mut String| {
        if pending.is_empty() {
            return;
        }
        let bytes: Vec<u8> = pending.iter().flat_map(|u| u.to_be_bytes()).collect();
        out.push('&');
        out.push_str(&engine.encode(bytes));
        out.push('-');
        pending.clear();
    };
    for c in name.chars() {
        if (' '..='~').contains(&c) {
            flush(&mut pending, &mut out);
            if c == '&' {
                out.push_str("&-");
            } else {
                out.push(c);
            }
        } else {
            let mut buf = [0u16; 2];
            pending.extend_from_slice(c.encode_utf16(&mut buf));
        }
    }
    flush(&mut pending, &mut out);
    out
}

/// Modified UTF-7 → UTF-8; names that are not valid modified UTF-7 are returned as they are.
pub fn decode_mailbox(name: &str) -> String {
    if !name.contains('&') {
        return name.to_string();
    }
    let engine = mutf7_engine();
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(start) = rest.find('&') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let Some(end) = after.find('-') else { return name.to_string() };
        let encoded = &after[..end];
        if encoded.is_empty() {
            out.push('&');
        } else {
            let Ok(bytes) = engine.decode(encoded) else { return name.to_string() };
            if bytes.len() % 2 != 0 {
                return name.to_string();
            }
            let units: Vec<u16> = bytes.chunks(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
            match String::from_utf16(&units) {
                Ok(s) => out.push_str(&s),
                Err(_) => return name.to_string(),
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/// `date-time` for APPEND: `"26-Nov-2025 10:00:00 +0000"` (UTC).
pub fn date_time(epoch: i64) -> String {
    let dt = chrono::DateTime::from_timestamp(epoch, 0).unwrap_or_default();
    use chrono::{Datelike, Timelike};
    format!(
        "\"{:02}-{}-{:04} {:02}:{:02}:{:02} +0000\"",
        dt.day(),
        MONTHS[dt.month0() as usize],
        dt.year(),
        dt.hour(),
        dt.minute(),
        dt.second()
    )
}

/// `date` for SEARCH SINCE/BEFORE: `26-Nov-2025` (the UTC day of `epoch`).
pub fn search_date(epoch: i64) -> String {
    let dt = chrono::DateTime::from_timestamp(epoch, 0).unwrap_or_default();
    use chrono::Datelike;
    format!("{}-{}-{:04}", dt.day(), MONTHS[dt.month0() as usize], dt.year())
}

/// Parses an INTERNALDATE (`26-Nov-2025 10:00:00 +0100`, day possibly space-padded) into
/// seconds since the epoch.
pub fn parse_internal_date(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_str(s.trim(), "%d-%b-%Y %H:%M:%S %z").ok().map(|d| d.timestamp())
}

/// A compact UID set (`1:3,7,9:10`) for sorted or unsorted UIDs.
pub fn uid_set(uids: &[Uid]) -> String {
    let mut sorted: Vec<Uid> = uids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out = String::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}:{end}"));
        }
        i += 1;
    }
    out
}

/// Expands `imap_proto::UidSetMember`s into UIDs (bounded: a set naming more than `max`
/// UIDs is cut, which no server we talk to would send for our own commands).
pub fn expand_uid_set(members: &[imap_proto::rfc4315::UidSetMember], max: usize) -> Vec<Uid> {
    let mut out = Vec::new();
    for m in members {
        match m {
            imap_proto::rfc4315::UidSetMember::Uid(u) => out.push(*u),
            imap_proto::rfc4315::UidSetMember::UidRange(r) => {
                for u in r.clone() {
                    if out.len() >= max {
                        break;
                    }
                    out.push(u);
                }
            }
        }
        if out.len() >= max {
            break;
        }
    }
    out
}

/// Characters allowed in an IMAP atom (and so in a keyword), besides alphanumerics.
fn atom_char(b: u8) -> bool {
    b.is_ascii_graphic() && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\' | b']')
}

/// Escape character for category names that are not valid keywords.
const KEYWORD_ESCAPE: u8 = b'~';

/// An ActiveSync category as an IMAP keyword. Categories may contain spaces and any
/// character; keywords are atoms. Bytes an atom cannot hold (and the escape character
/// itself, and a leading `$`, which marks server keywords) become `~XX` (hex).
pub fn encode_keyword(category: &str) -> String {
    let mut out = String::with_capacity(category.len());
    for (i, &b) in category.as_bytes().iter().enumerate() {
        if atom_char(b) && b != KEYWORD_ESCAPE && !(i == 0 && b == b'$') {
            out.push(b as char);
        } else {
            out.push_str(&format!("~{b:02X}"));
        }
    }
    out
}

/// The inverse of [`encode_keyword`]. Keywords that are not categories (`$`-prefixed server
/// keywords such as `$Forwarded`, `$MDNSent`, `$Junk`, and Thunderbird's `Junk`/`NonJunk`)
/// give `None`.
pub fn decode_keyword(keyword: &str) -> Option<String> {
    if keyword.starts_with('$')
        || keyword.starts_with('\\')
        || keyword.eq_ignore_ascii_case("junk")
        || keyword.eq_ignore_ascii_case("nonjunk")
    {
        return None;
    }
    let bytes = keyword.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == KEYWORD_ESCAPE
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"), 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mailbox_names_round_trip_through_modified_utf7() {
        for (utf8, wire) in [
            ("INBOX", "INBOX"),
            ("Entwürfe", "Entw&APw-rfe"),
            ("A&B", "A&-B"),
            ("日本語", "&ZeVnLIqe-"),
            ("Ordner/Unterordner ✓", "Ordner/Unterordner &JxM-"),
        ] {
            assert_eq!(encode_mailbox(utf8), wire);
            assert_eq!(decode_mailbox(wire), utf8);
        }
        assert_eq!(decode_mailbox("broken&"), "broken&");
    }

    #[test]
    fn strings_are_quoted_or_literal() {
        match string("a \"b\" \\c") {
            Arg::Text(t) => assert_eq!(t, "\"a \\\"b\\\" \\\\c\""),
            Arg::Literal(_) => panic!("quotable"),
        }
        assert!(matches!(string("zwölf"), Arg::Literal(_)));
        assert!(matches!(string("a\r\nb"), Arg::Literal(_)));
    }

    #[test]
    fn dates() {
        assert_eq!(date_time(0), "\"01-Jan-1970 00:00:00 +0000\"");
        assert_eq!(search_date(86_400 * 31), "1-Feb-1970");
        assert_eq!(parse_internal_date("26-Nov-2025 10:00:00 +0100"), Some(1_764_147_600));
        assert_eq!(parse_internal_date(" 6-Nov-2025 10:00:00 +0000"), Some(1_762_423_200));
        assert_eq!(parse_internal_date("garbage"), None);
    }

    #[test]
    fn uid_sets_are_compact() {
        assert_eq!(uid_set(&[5, 1, 2, 3, 9, 10, 7]), "1:3,5,7,9:10");
        assert_eq!(uid_set(&[4]), "4");
        assert_eq!(uid_set(&[]), "");
    }

    #[test]
    fn categories_survive_as_keywords() {
        for c in ["Work", "Red category", "50% (off)", "~tilde", "$dollar", "Grün"] {
            let k = encode_keyword(c);
            assert!(k.bytes().all(atom_char), "{k}");
            assert!(!k.starts_with('$'));
            assert_eq!(decode_keyword(&k).as_deref(), Some(c));
        }
        assert_eq!(decode_keyword("$Forwarded"), None);
        assert_eq!(decode_keyword("NonJunk"), None);
    }
}
