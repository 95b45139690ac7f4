//! Full-text indexing of message bodies for search (SQLite FTS5, contentless).

use mail_parser::{Address, MessageParser};
use rusqlite::{Transaction, params};

/// Text indexed per message; body text beyond this is not searchable, which keeps a 25 MB
/// message from producing a 25 MB index entry.
const MAX_INDEXED_BODY: usize = 256 * 1024;

/// What gets indexed for one message.
pub(super) struct IndexedText {
    subject: String,
    addresses: String,
    body: String,
}

/// Extracts searchable text. Runs outside the write transaction (it is CPU work); never
/// fails: an unparseable message is indexed by nothing.
pub(super) fn extract(raw: &[u8]) -> IndexedText {
    let Some(msg) = MessageParser::default().parse(raw) else {
        return IndexedText { subject: String::new(), addresses: String::new(), body: String::new() };
    };
    let mut addresses = String::new();
    for list in [msg.from(), msg.to(), msg.cc(), msg.reply_to()].into_iter().flatten() {
        push_addresses(&mut addresses, list);
    }
    let mut body = msg.body_text(0).map(|b| b.into_owned()).unwrap_or_default();
    if body.len() > MAX_INDEXED_BODY {
        let mut cut = MAX_INDEXED_BODY;
        while !body.is_char_boundary(cut) {
            cut -= 1;
        }
        body.truncate(cut);
    }
    IndexedText { subject: msg.subject().unwrap_or_default().to_string(), addresses, body }
}

fn push_addresses(out: &mut String, list: &Address<'_>) {
    for a in list.iter() {
        if let Some(n) = a.name() {
            out.push_str(n);
            out.push(' ');
        }
        if let Some(addr) = a.address() {
            out.push_str(addr);
            out.push(' ');
        }
    }
}

pub(super) fn index(tx: &Transaction<'_>, body_id: i64, text: &IndexedText) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO body_text(rowid, subject, addresses, body) VALUES (?1, ?2, ?3, ?4)",
        params![body_id, text.subject, text.addresses, text.body],
    )?;
    Ok(())
}

pub(super) fn unindex(tx: &Transaction<'_>, body_id: i64) -> rusqlite::Result<()> {
    tx.execute("DELETE FROM body_text WHERE rowid = ?1", params![body_id])?;
    Ok(())
}

/// Turns user text into an FTS5 query: every word must appear (as a prefix), and no FTS
/// syntax in the input is interpreted. `None` when the text has no words.
pub(super) fn fts_query(text: &str) -> Option<String> {
    let terms: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric() && c != '@' && c != '.' && c != '_' && c != '-')
        .filter(|w| !w.is_empty())
        .take(16)
        .map(|w| format!("\"{}\"*", w.replace('"', "")))
        .collect();
    (!terms.is_empty()).then(|| terms.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_subject_addresses_and_body() {
        let raw = b"From: Bob <bob@example.test>\r\nTo: alice@example.test\r\nSubject: Lunch plans\r\n\r\nMeet at noon.\r\n";
        let t = extract(raw);
        assert_eq!(t.subject, "Lunch plans");
        assert!(t.addresses.contains("bob@example.test") && t.addresses.contains("Bob"));
        assert!(t.body.contains("Meet at noon."));
    }

    #[test]
    fn garbage_is_indexed_as_nothing_much() {
        let t = extract(&[0xFF, 0x00, 0x13]);
        assert!(t.subject.is_empty());
    }

    #[test]
    fn queries_quote_every_word() {
        assert_eq!(fts_query("lunch NEAR(plans)").as_deref(), Some("\"lunch\"* \"NEAR\"* \"plans\"*"));
        assert_eq!(fts_query("  \"  ").as_deref(), None);
        assert_eq!(fts_query("bob@example.test").as_deref(), Some("\"bob@example.test\"*"));
    }
}
