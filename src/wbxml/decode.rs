//! WBXML bytes → [`Element`] tree.
//!
//! Iterative (no recursion), and bounded by [`Limits`] in depth, element count, string sizes
//! and total content, so that any byte string yields either a tree or a [`DecodeError`] in time
//! and memory linear in its length (string-table references cannot multiply the input).
//! Tolerates what other encoders emit: any WBXML version byte, a public identifier given as a
//! string-table reference, a string table, and `STR_T` text.

use super::{Element, Node, PAGES, Tag};

/// Hard bounds on what a decoded document may hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Deepest element nesting accepted (the root is depth 1).
    pub max_depth: usize,
    /// Most elements in one document.
    pub max_elements: usize,
    /// Longest single inline string, string-table string or opaque block, in bytes.
    pub max_string_len: usize,
    /// Longest string table, in bytes.
    pub max_string_table_len: usize,
    /// Most bytes of text and opaque data in one document, counted after string-table
    /// references are expanded. Without it a string-table reference (two bytes) could stand
    /// for the whole table again and again, and a small document could decode to gigabytes.
    pub max_content_len: usize,
}

impl Limits {
    /// Depth 32 covers every ActiveSync request (the deepest, Sync with nested
    /// ApplicationData, is about 10 levels); 50,000 elements covers a Sync that changes a few
    /// thousand items; strings up to `max_body` (the HTTP body limit); content up to twice
    /// `max_body` (a document without string-table references never holds more content than
    /// its own length, which leaves room for honest string-table compression).
    pub const fn for_body_limit(max_body: usize) -> Self {
        Limits {
            max_depth: 32,
            max_elements: 50_000,
            max_string_len: max_body,
            max_string_table_len: 64 * 1024,
            max_content_len: max_body.saturating_mul(2),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::for_body_limit(16 * 1024 * 1024)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("document ends early (at byte {0})")]
    UnexpectedEnd(usize),
    #[error("multi-byte integer at byte {0} is longer than 32 bits")]
    IntegerOverflow(usize),
    #[error("unsupported character set {0} (only UTF-8 is accepted)")]
    UnsupportedCharset(u32),
    #[error("unsupported WBXML version byte {0:#04x}")]
    UnsupportedVersion(u8),
    #[error("unknown code page {page} at byte {at}")]
    UnknownCodePage { page: u8, at: usize },
    #[error("token {token:#04x} at byte {at} is not used by ActiveSync")]
    UnsupportedToken { token: u8, at: usize },
    #[error("element with attributes at byte {0}; ActiveSync has no attributes")]
    AttributesNotSupported(usize),
    #[error("text or END at byte {0} outside any element")]
    ContentOutsideElement(usize),
    #[error("bytes after the root element, at byte {0}")]
    TrailingData(usize),
    #[error("the document has no root element")]
    NoRootElement,
    #[error("string-table reference {0} is out of range")]
    BadStringTableReference(u32),
    #[error("text at byte {0} is not valid UTF-8")]
    InvalidUtf8(usize),
    #[error("character entity {0:#x} is not a valid character")]
    InvalidEntity(u32),
    #[error("elements nested deeper than {0}")]
    TooDeep(usize),
    #[error("more than {0} elements")]
    TooManyElements(usize),
    #[error("a string or opaque block is longer than {0} bytes")]
    StringTooLong(usize),
    #[error("the document holds more than {0} bytes of text and opaque data")]
    ContentTooLong(usize),
}

/// Decodes with default limits.
pub fn decode(bytes: &[u8]) -> Result<Element, DecodeError> {
    decode_with(bytes, &Limits::default())
}

/// Decodes `bytes` into a tree, enforcing `limits`.
pub fn decode_with(bytes: &[u8], limits: &Limits) -> Result<Element, DecodeError> {
    let mut r = Reader { bytes, pos: 0 };

    let version = r.byte()?;
    if version > 0x03 {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    let public_id = r.mb_u32()?;
    if public_id == 0 {
        // Public identifier given as a string-table index (libwbxml's default form).
        r.mb_u32()?;
    }
    let charset = r.mb_u32()?;
    // 106 is UTF-8; 0 means "unknown" and some encoders write it; 3 is US-ASCII, a subset.
    if !matches!(charset, 0 | 3 | 106) {
        return Err(DecodeError::UnsupportedCharset(charset));
    }
    let table_len = r.mb_u32()? as usize;
    if table_len > limits.max_string_table_len {
        return Err(DecodeError::StringTooLong(limits.max_string_table_len));
    }
    let string_table = r.take(table_len)?;

    let mut page: u8 = 0;
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut elements = 0usize;
    let mut content = Content { used: 0, max: limits.max_content_len };

    while r.pos < bytes.len() {
        if root.is_some() {
            return Err(DecodeError::TrailingData(r.pos));
        }
        let at = r.pos;
        let token = r.byte()?;
        match token {
            0x00 => {
                // SWITCH_PAGE
                let p = r.byte()?;
                if p as usize >= PAGES.len() {
                    return Err(DecodeError::UnknownCodePage { page: p, at });
                }
                page = p;
            }
            0x01 => {
                // END
                let done = stack.pop().ok_or(DecodeError::ContentOutsideElement(at))?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(Node::Element(done)),
                    None => root = Some(done),
                }
            }
            0x02 => {
                // ENTITY: a character by code point.
                // NUL is not a character a document may hold (inline strings cannot carry it,
                // so a tree holding one would not survive re-encoding).
                let cp = r.mb_u32()?;
                let c = char::from_u32(cp).filter(|&c| c != '\0').ok_or(DecodeError::InvalidEntity(cp))?;
                let parent = stack.last_mut().ok_or(DecodeError::ContentOutsideElement(at))?;
                content.charge(c.len_utf8())?;
                parent.push_text(c.to_string());
            }
            0x03 => {
                // STR_I: NUL-terminated inline string.
                let s = r.terminated(limits.max_string_len)?;
                let text = std::str::from_utf8(s).map_err(|_| DecodeError::InvalidUtf8(at))?;
                let parent = stack.last_mut().ok_or(DecodeError::ContentOutsideElement(at))?;
                content.charge(text.len())?;
                parent.push_text(text);
            }
            0x83 => {
                // STR_T: reference into the string table.
                let offset = r.mb_u32()?;
                let start = offset as usize;
                if start >= string_table.len() {
                    return Err(DecodeError::BadStringTableReference(offset));
                }
                let rest = &string_table[start..];
                let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
                if end > limits.max_string_len {
                    return Err(DecodeError::StringTooLong(limits.max_string_len));
                }
                let text = std::str::from_utf8(&rest[..end]).map_err(|_| DecodeError::InvalidUtf8(at))?;
                let parent = stack.last_mut().ok_or(DecodeError::ContentOutsideElement(at))?;
                content.charge(text.len())?;
                parent.push_text(text);
            }
            0xC3 => {
                // OPAQUE: length-prefixed bytes.
                let len = r.mb_u32()? as usize;
                if len > limits.max_string_len {
                    return Err(DecodeError::StringTooLong(limits.max_string_len));
                }
                let data = r.take(len)?;
                let parent = stack.last_mut().ok_or(DecodeError::ContentOutsideElement(at))?;
                content.charge(data.len())?;
                if !data.is_empty() {
                    parent.children.push(Node::Opaque(data.to_vec()));
                }
            }
            // LITERAL*, EXT*, PI: not part of ActiveSync.
            0x04 | 0x40..=0x44 | 0x80..=0x82 | 0x84 | 0xC0..=0xC2 | 0xC4 => {
                return Err(DecodeError::UnsupportedToken { token, at });
            }
            _ => {
                if token & 0x80 != 0 {
                    return Err(DecodeError::AttributesNotSupported(at));
                }
                let id = token & 0x3F;
                if id < 0x05 {
                    return Err(DecodeError::UnsupportedToken { token, at });
                }
                elements += 1;
                if elements > limits.max_elements {
                    return Err(DecodeError::TooManyElements(limits.max_elements));
                }
                // The new element sits at depth `stack.len() + 1`, with or without content.
                if stack.len() >= limits.max_depth {
                    return Err(DecodeError::TooDeep(limits.max_depth));
                }
                let element = Element::new(Tag::new(page, id));
                if token & 0x40 != 0 {
                    stack.push(element);
                } else {
                    match stack.last_mut() {
                        Some(parent) => parent.children.push(Node::Element(element)),
                        None => root = Some(element),
                    }
                }
            }
        }
    }

    if !stack.is_empty() {
        return Err(DecodeError::UnexpectedEnd(bytes.len()));
    }
    root.ok_or(DecodeError::NoRootElement)
}

/// The document's content budget: bytes of text and opaque data decoded so far.
struct Content {
    used: usize,
    max: usize,
}

impl Content {
    fn charge(&mut self, len: usize) -> Result<(), DecodeError> {
        self.used = self.used.saturating_add(len);
        if self.used > self.max {
            return Err(DecodeError::ContentTooLong(self.max));
        }
        Ok(())
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, DecodeError> {
        let b = *self.bytes.get(self.pos).ok_or(DecodeError::UnexpectedEnd(self.pos))?;
        self.pos += 1;
        Ok(b)
    }

    /// WBXML's multi-byte unsigned integer: 7 bits per byte, high bit = more follows.
    fn mb_u32(&mut self) -> Result<u32, DecodeError> {
        let start = self.pos;
        let mut value: u64 = 0;
        for _ in 0..5 {
            let b = self.byte()?;
            value = (value << 7) | u64::from(b & 0x7F);
            if b & 0x80 == 0 {
                return u32::try_from(value).map_err(|_| DecodeError::IntegerOverflow(start));
            }
        }
        Err(DecodeError::IntegerOverflow(start))
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(len).ok_or(DecodeError::UnexpectedEnd(self.pos))?;
        let s = self.bytes.get(self.pos..end).ok_or(DecodeError::UnexpectedEnd(self.bytes.len()))?;
        self.pos = end;
        Ok(s)
    }

    fn terminated(&mut self, max: usize) -> Result<&'a [u8], DecodeError> {
        let rest = &self.bytes[self.pos..];
        let len = rest.iter().position(|&b| b == 0).ok_or(DecodeError::UnexpectedEnd(self.bytes.len()))?;
        if len > max {
            return Err(DecodeError::StringTooLong(max));
        }
        let s = &rest[..len];
        self.pos += len + 1;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wbxml::tag;

    /// A FolderSync request as devices send it (compact header, inline string).
    const FOLDER_SYNC_REQUEST: &[u8] = &[0x03, 0x01, 0x6A, 0x00, 0x00, 0x07, 0x56, 0x52, 0x03, b'0', 0x00, 0x01, 0x01];

    #[test]
    fn decodes_a_folder_sync_request() {
        let root = decode(FOLDER_SYNC_REQUEST).unwrap();
        assert_eq!(root.tag, tag::folder_hierarchy::FOLDER_SYNC);
        assert_eq!(root.child_text(tag::folder_hierarchy::SYNC_KEY).as_deref(), Some("0"));
    }

    #[test]
    fn accepts_a_public_id_in_the_string_table() {
        // libwbxml's default: public id 0 → string-table index 0, table holds the DTD name.
        let mut doc = vec![0x03, 0x00, 0x00, 0x6A, 0x04, b'a', b'b', b'c', 0x00];
        doc.extend_from_slice(&[0x00, 0x07, 0x56, 0x52, 0x83, 0x00, 0x01, 0x01]);
        let root = decode(&doc).unwrap();
        // STR_T 0 refers to "abc" in the table.
        assert_eq!(root.child_text(tag::folder_hierarchy::SYNC_KEY).as_deref(), Some("abc"));
    }

    #[test]
    fn rejects_truncated_and_trailing_input() {
        for cut in 0..FOLDER_SYNC_REQUEST.len() {
            assert!(decode(&FOLDER_SYNC_REQUEST[..cut]).is_err(), "prefix of {cut} bytes decoded");
        }
        let mut long = FOLDER_SYNC_REQUEST.to_vec();
        long.push(0x45);
        assert_eq!(decode(&long), Err(DecodeError::TrailingData(13)));
    }

    #[test]
    fn enforces_depth_and_count_limits() {
        let mut doc = vec![0x03, 0x01, 0x6A, 0x00];
        doc.extend(std::iter::repeat_n(0x45u8, 40));
        doc.extend(std::iter::repeat_n(0x01u8, 40));
        assert_eq!(decode(&doc), Err(DecodeError::TooDeep(32)));

        let mut wide = vec![0x03, 0x01, 0x6A, 0x00, 0x45];
        wide.extend(std::iter::repeat_n(0x05u8, 60_000));
        wide.push(0x01);
        assert_eq!(decode(&wide), Err(DecodeError::TooManyElements(50_000)));
    }

    #[test]
    fn rejects_oversized_strings_and_opaque() {
        let limits = Limits { max_string_len: 4, ..Limits::default() };
        let doc = [0x03, 0x01, 0x6A, 0x00, 0x45, 0x03, b'h', b'e', b'l', b'l', b'o', 0x00, 0x01];
        assert_eq!(decode_with(&doc, &limits), Err(DecodeError::StringTooLong(4)));
        // An opaque length far past the end is an early end, not an allocation.
        let doc = [0x03, 0x01, 0x6A, 0x00, 0x45, 0xC3, 0x8F, 0xFF, 0xFF, 0x7F, 0x01];
        assert!(decode(&doc).is_err());
    }

    #[test]
    fn string_table_references_cannot_multiply_the_input() {
        // A 4 KiB table string referenced 1,000 times: 2 KiB of references would expand to
        // 4 MiB of text. The content budget stops it; an honest amount of sharing passes.
        let table = [vec![b'A'; 4095], vec![0]].concat();
        let mut doc = vec![0x03, 0x01, 0x6A, 0xA0, 0x00];
        doc.extend_from_slice(&table);
        doc.push(0x45);
        doc.extend(std::iter::repeat_n([0x83u8, 0x00], 1000).flatten());
        doc.push(0x01);
        let limits = Limits::for_body_limit(64 * 1024);
        assert_eq!(decode_with(&doc, &limits), Err(DecodeError::ContentTooLong(128 * 1024)));
        let small = Limits { max_content_len: 3 * 4095, ..limits };
        let mut three = doc[..5 + table.len() + 1].to_vec();
        three.extend_from_slice(&[0x83, 0x00, 0x83, 0x00, 0x83, 0x00, 0x01]);
        assert_eq!(decode_with(&three, &small).unwrap().text_content().map(|t| t.len()), Some(3 * 4095));
        // A table string longer than `max_string_len` is refused like an inline one.
        let short = Limits { max_string_len: 100, ..limits };
        assert_eq!(decode_with(&three, &short), Err(DecodeError::StringTooLong(100)));
    }

    #[test]
    fn inline_and_opaque_content_count_against_the_budget() {
        let limits = Limits { max_content_len: 4, ..Limits::default() };
        let doc = [0x03, 0x01, 0x6A, 0x00, 0x45, 0x03, b'a', b'b', 0x00, 0xC3, 0x03, 1, 2, 3, 0x01];
        assert_eq!(decode_with(&doc, &limits), Err(DecodeError::ContentTooLong(4)));
        let limits = Limits { max_content_len: 5, ..limits };
        assert!(decode_with(&doc, &limits).is_ok());
    }

    #[test]
    fn the_depth_limit_counts_empty_elements_too() {
        // Sync > Collections > Collection (empty): three levels.
        let doc = [0x03, 0x01, 0x6A, 0x00, 0x45, 0x5C, 0x0F, 0x01, 0x01];
        let two = Limits { max_depth: 2, ..Limits::default() };
        assert_eq!(decode_with(&doc, &two), Err(DecodeError::TooDeep(2)));
        let three = Limits { max_depth: 3, ..Limits::default() };
        assert!(decode_with(&doc, &three).is_ok());
        // An empty root is at depth 1.
        let zero = Limits { max_depth: 0, ..Limits::default() };
        assert_eq!(decode_with(&[0x03, 0x01, 0x6A, 0x00, 0x05], &zero), Err(DecodeError::TooDeep(0)));
    }

    #[test]
    fn a_nul_entity_is_refused() {
        // Text holding NUL could not be re-encoded (inline strings end at NUL).
        let doc = [0x03, 0x01, 0x6A, 0x00, 0x45, 0x02, 0x00, 0x01];
        assert_eq!(decode(&doc), Err(DecodeError::InvalidEntity(0)));
        let doc = [0x03, 0x01, 0x6A, 0x00, 0x45, 0x02, 0x41, 0x01];
        assert_eq!(decode(&doc).unwrap().text_content().as_deref(), Some("A"));
    }

    #[test]
    fn rejects_attributes_unknown_pages_and_bad_utf8() {
        assert_eq!(decode(&[0x03, 0x01, 0x6A, 0x00, 0xC5, 0x01, 0x01]), Err(DecodeError::AttributesNotSupported(4)));
        assert_eq!(decode(&[0x03, 0x01, 0x6A, 0x00, 0x00, 0x30, 0x05]), Err(DecodeError::UnknownCodePage { page: 0x30, at: 4 }));
        assert_eq!(decode(&[0x03, 0x01, 0x6A, 0x00, 0x45, 0x03, 0xFF, 0x00, 0x01]), Err(DecodeError::InvalidUtf8(5)));
        assert_eq!(decode(&[0x03, 0x01, 0x04, 0x00, 0x05]), Err(DecodeError::UnsupportedCharset(4)));
        assert_eq!(decode(&[0x03, 0x01, 0x6A, 0x00]), Err(DecodeError::NoRootElement));
        assert_eq!(decode(&[0x03, 0x01, 0x6A, 0x00, 0x01]), Err(DecodeError::ContentOutsideElement(4)));
        assert_eq!(decode(&[0x03, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]), Err(DecodeError::IntegerOverflow(1)));
    }
}
