//! [`Element`] tree → WBXML bytes.
//!
//! Always writes the compact header devices expect (`03 01 6A 00`: WBXML 1.3, unknown public
//! id, UTF-8, empty string table) and inline strings. Infallible: WBXML inline strings cannot
//! hold NUL, so NUL characters in text are dropped rather than cutting the string short.

use super::{Element, Node};

const HEADER: [u8; 4] = [0x03, 0x01, 0x6A, 0x00];
const SWITCH_PAGE: u8 = 0x00;
const END: u8 = 0x01;
const STR_I: u8 = 0x03;
const OPAQUE: u8 = 0xC3;
const HAS_CONTENT: u8 = 0x40;

/// Encodes a document whose root is `root`.
pub fn encode(root: &Element) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(&HEADER);
    let mut page = 0u8;
    // Iterative walk: (element, index of the next child to write).
    let mut stack: Vec<(&Element, usize)> = Vec::new();
    open(&mut out, &mut page, root, &mut stack);
    while let Some((element, next)) = stack.last_mut() {
        let Some(child) = element.children.get(*next) else {
            out.push(END);
            stack.pop();
            continue;
        };
        *next += 1;
        match child {
            Node::Element(e) => open(&mut out, &mut page, e, &mut stack),
            Node::Text(t) => {
                out.push(STR_I);
                out.extend(t.bytes().filter(|&b| b != 0));
                out.push(0);
            }
            Node::Opaque(b) => {
                out.push(OPAQUE);
                mb_u32(&mut out, b.len() as u32);
                out.extend_from_slice(b);
            }
        }
    }
    out
}

fn open<'a>(out: &mut Vec<u8>, page: &mut u8, e: &'a Element, stack: &mut Vec<(&'a Element, usize)>) {
    if e.tag.page() != *page {
        out.push(SWITCH_PAGE);
        out.push(e.tag.page());
        *page = e.tag.page();
    }
    let has_content = e.children.iter().any(|c| match c {
        Node::Element(_) => true,
        Node::Text(t) => t.bytes().any(|b| b != 0),
        Node::Opaque(b) => !b.is_empty(),
    });
    if has_content {
        out.push(e.tag.token() | HAS_CONTENT);
        stack.push((e, 0));
    } else {
        out.push(e.tag.token());
    }
}

fn mb_u32(out: &mut Vec<u8>, mut v: u32) {
    let mut buf = [0u8; 5];
    let mut i = buf.len() - 1;
    buf[i] = (v & 0x7F) as u8;
    v >>= 7;
    while v > 0 {
        i -= 1;
        buf[i] = 0x80 | (v & 0x7F) as u8;
        v >>= 7;
    }
    out.extend_from_slice(&buf[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wbxml::{decode, tag};

    #[test]
    fn encodes_with_the_compact_header_and_page_switches() {
        let doc = Element::new(tag::folder_hierarchy::FOLDER_SYNC).with_text(tag::folder_hierarchy::SYNC_KEY, "0");
        assert_eq!(encode(&doc), [0x03, 0x01, 0x6A, 0x00, 0x00, 0x07, 0x56, 0x52, 0x03, b'0', 0x00, 0x01, 0x01]);
    }

    #[test]
    fn empty_elements_have_no_content_flag() {
        let doc = Element::new(tag::air_sync::SYNC).with(Element::new(tag::air_sync::GET_CHANGES));
        assert_eq!(encode(&doc), [0x03, 0x01, 0x6A, 0x00, 0x45, 0x13, 0x01]);
    }

    #[test]
    fn multi_byte_integers() {
        let mut out = Vec::new();
        mb_u32(&mut out, 0);
        mb_u32(&mut out, 0x7F);
        mb_u32(&mut out, 0x80);
        mb_u32(&mut out, 0xA0);
        mb_u32(&mut out, u32::MAX);
        assert_eq!(out, [0x00, 0x7F, 0x81, 0x00, 0x81, 0x20, 0x8F, 0xFF, 0xFF, 0xFF, 0x7F]);
    }

    #[test]
    fn opaque_round_trips() {
        let doc = Element::new(tag::air_sync_base::BODY).with(Element::opaque(tag::air_sync_base::DATA, vec![0u8, 1, 2, 255]));
        assert_eq!(decode(&encode(&doc)).unwrap(), doc);
    }

    #[test]
    fn nul_in_text_is_dropped() {
        let doc = Element::text(tag::email::SUBJECT, "a\0b");
        assert_eq!(decode(&encode(&doc)).unwrap().text_content().as_deref(), Some("ab"));
        let only_nul = Element::text(tag::email::SUBJECT, "\0");
        assert_eq!(decode(&encode(&only_nul)).unwrap(), Element::new(tag::email::SUBJECT));
    }
}
