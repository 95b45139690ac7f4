//! The readable XML form of an element tree, for people and test vectors.
//!
//! Written with every element prefixed by its code page (`<AirSync:Sync>`), the prefixes
//! declared on the root so the output is namespace-well-formed. Read back from that form and
//! also from the default-namespace form other tools print (`<Sync xmlns="AirSync:">`), so the
//! output of an independent decoder can be fed straight in. Opaque content is written as
//! base64 inside an element carrying `opaque="base64"`.

use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use quick_xml::events::Event;

use super::{Element, Node, PAGES, PageDef, Tag};

#[derive(Debug, thiserror::Error)]
pub enum XmlError {
    #[error("XML syntax error at byte {at}: {reason}")]
    Syntax { at: u64, reason: String },
    #[error("unknown code page for element <{0}>")]
    UnknownNamespace(String),
    #[error("unknown element <{0}>")]
    UnknownElement(String),
    #[error("unsupported attribute {0} (only xmlns and opaque are understood)")]
    UnsupportedAttribute(String),
    #[error("opaque content is not valid base64: {0}")]
    BadBase64(String),
    #[error("the document has no root element")]
    NoRootElement,
    #[error("more than one root element")]
    MultipleRoots,
    #[error("elements nested deeper than {0}")]
    TooDeep(usize),
}

const MAX_DEPTH: usize = 64;

/// Renders `root` as indented XML with namespace-prefixed names.
pub fn to_xml(root: &Element) -> String {
    let mut pages: Vec<u8> = Vec::new();
    collect_pages(root, &mut pages);
    pages.sort_unstable();
    pages.dedup();

    let mut out = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n");
    let mut decls = String::new();
    for p in pages {
        if let Some(def) = PAGES.get(p as usize) {
            let _ = write!(decls, " xmlns:{}=\"{}\"", def.name, escape(def.xmlns));
        }
    }
    write_element(&mut out, root, 0, &decls);
    out
}

fn collect_pages(e: &Element, pages: &mut Vec<u8>) {
    pages.push(e.tag.page());
    for c in e.elements() {
        collect_pages(c, pages);
    }
}

fn write_element(out: &mut String, e: &Element, depth: usize, decls: &str) {
    let name = e.tag.to_string();
    indent(out, depth);
    let has_elements = e.elements().next().is_some();
    let has_opaque = e.children.iter().any(|c| matches!(c, Node::Opaque(_)));
    if e.children.is_empty() {
        let _ = writeln!(out, "<{name}{decls}/>");
    } else if has_opaque && !has_elements {
        let _ = writeln!(out, "<{name}{decls} opaque=\"base64\">{}</{name}>", BASE64.encode(e.bytes_content()));
    } else if !has_elements {
        let text = e.text_content().unwrap_or_default();
        let _ = writeln!(out, "<{name}{decls}>{}</{name}>", escape(&text));
    } else if e.children.iter().all(|c| matches!(c, Node::Element(_))) {
        let _ = writeln!(out, "<{name}{decls}>");
        for c in e.elements() {
            write_element(out, c, depth + 1, "");
        }
        indent(out, depth);
        let _ = writeln!(out, "</{name}>");
    } else {
        // Mixed content: written inline so no whitespace is added to the text.
        let _ = write!(out, "<{name}{decls}>");
        for c in &e.children {
            match c {
                Node::Element(child) => {
                    let mut inner = String::new();
                    write_element(&mut inner, child, 0, "");
                    out.push_str(inner.trim_end());
                }
                Node::Text(t) => out.push_str(&escape(t)),
                Node::Opaque(b) => out.push_str(&escape(&String::from_utf8_lossy(b))),
            }
        }
        let _ = writeln!(out, "</{name}>");
    }
}

fn indent(out: &mut String, depth: usize) {
    for _ in 0..depth {
        out.push_str("  ");
    }
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\r' => out.push_str("&#13;"),
            c => out.push(c),
        }
    }
    out
}

/// One open element while parsing: the element, its default namespace page, its prefix
/// declarations, and whether its content is base64 opaque data.
struct Open {
    element: Element,
    default_page: Option<u8>,
    prefixes: Vec<(String, u8)>,
    opaque: bool,
    text: String,
}

/// Parses the XML form back into a tree.
pub fn from_xml(xml: &str) -> Result<Element, XmlError> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut stack: Vec<Open> = Vec::new();
    let mut root: Option<Element> = None;
    loop {
        let at = reader.buffer_position();
        let event = reader.read_event().map_err(|e| XmlError::Syntax { at, reason: e.to_string() })?;
        match event {
            Event::Start(start) => {
                let open = open_element(&start, &stack, at)?;
                if root.is_some() {
                    return Err(XmlError::MultipleRoots);
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(XmlError::TooDeep(MAX_DEPTH));
                }
                stack.push(open);
            }
            Event::Empty(start) => {
                let open = open_element(&start, &stack, at)?;
                close(open, &mut stack, &mut root)?;
            }
            Event::End(_) => {
                let open = stack.pop().ok_or(XmlError::Syntax { at, reason: "unmatched end tag".into() })?;
                close(open, &mut stack, &mut root)?;
            }
            Event::Text(t) => {
                let text = t.decode().map_err(|e| XmlError::Syntax { at, reason: e.to_string() })?;
                push_text(&mut stack, &text, at)?;
            }
            Event::CData(t) => {
                let text = t.decode().map_err(|e| XmlError::Syntax { at, reason: e.to_string() })?;
                push_text(&mut stack, &text, at)?;
            }
            Event::GeneralRef(r) => {
                let resolved = match r.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    Ok(None) => {
                        let name = r.decode().map_err(|e| XmlError::Syntax { at, reason: e.to_string() })?;
                        quick_xml::escape::resolve_predefined_entity(&name)
                            .ok_or_else(|| XmlError::Syntax { at, reason: format!("unknown entity &{name};") })?
                            .to_string()
                    }
                    Err(e) => return Err(XmlError::Syntax { at, reason: e.to_string() }),
                };
                push_text(&mut stack, &resolved, at)?;
            }
            Event::Eof => break,
            Event::Decl(_) | Event::PI(_) | Event::DocType(_) | Event::Comment(_) => {}
        }
    }
    if !stack.is_empty() {
        return Err(XmlError::Syntax { at: xml.len() as u64, reason: "unclosed element".into() });
    }
    root.ok_or(XmlError::NoRootElement)
}

fn push_text(stack: &mut [Open], text: &str, at: u64) -> Result<(), XmlError> {
    match stack.last_mut() {
        Some(open) => {
            open.text.push_str(text);
            Ok(())
        }
        None if text.trim().is_empty() => Ok(()),
        None => Err(XmlError::Syntax { at, reason: "text outside the root element".into() }),
    }
}

/// Moves pending text into the element: whitespace-only text between elements is layout, not
/// content.
fn flush_text(open: &mut Open) -> Result<(), XmlError> {
    let text = std::mem::take(&mut open.text);
    if text.is_empty() {
        return Ok(());
    }
    if open.opaque {
        let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        let bytes = BASE64.decode(compact.as_bytes()).map_err(|e| XmlError::BadBase64(e.to_string()))?;
        if !bytes.is_empty() {
            open.element.children.push(Node::Opaque(bytes));
        }
    } else if !text.trim().is_empty() {
        open.element.push_text(text);
    }
    Ok(())
}

fn close(mut open: Open, stack: &mut [Open], root: &mut Option<Element>) -> Result<(), XmlError> {
    flush_text(&mut open)?;
    match stack.last_mut() {
        Some(parent) => {
            flush_text(parent)?;
            parent.element.push(open.element);
        }
        None => {
            if root.is_some() {
                return Err(XmlError::MultipleRoots);
            }
            *root = Some(open.element);
        }
    }
    Ok(())
}

/// The page a namespace names: its exact `xmlns`, else its page name with or without the
/// colon, in any letter case (libwbxml writes the GAL page as `Gal:`; the spec's schemas write
/// `GAL`). Page names differ from one another in more than case, so this is unambiguous.
fn page_for_namespace(uri: &str) -> Option<&'static PageDef> {
    let name = uri.trim_end_matches(':');
    PAGES.iter().find(|p| p.xmlns == uri).or_else(|| PAGES.iter().find(|p| p.name.eq_ignore_ascii_case(name)))
}

fn open_element(start: &quick_xml::events::BytesStart<'_>, stack: &[Open], at: u64) -> Result<Open, XmlError> {
    let syntax = |reason: String| XmlError::Syntax { at, reason };
    let mut default_page = stack.last().and_then(|o| o.default_page);
    let mut prefixes = Vec::new();
    let mut opaque = false;
    for attr in start.attributes() {
        let attr = attr.map_err(|e| syntax(e.to_string()))?;
        let key = std::str::from_utf8(attr.key.as_ref()).map_err(|e| syntax(e.to_string()))?.to_string();
        let value = attr.unescape_value().map_err(|e| syntax(e.to_string()))?;
        if key == "xmlns" {
            let page = page_for_namespace(&value).ok_or_else(|| XmlError::UnknownNamespace(value.to_string()))?;
            default_page = Some(page.number);
        } else if let Some(prefix) = key.strip_prefix("xmlns:") {
            let page = page_for_namespace(&value).ok_or_else(|| XmlError::UnknownNamespace(value.to_string()))?;
            prefixes.push((prefix.to_string(), page.number));
        } else if key == "opaque" {
            opaque = match value.as_ref() {
                "base64" => true,
                "text" => false,
                other => return Err(XmlError::UnsupportedAttribute(format!("opaque=\"{other}\""))),
            };
        } else {
            return Err(XmlError::UnsupportedAttribute(key));
        }
    }

    let qname = start.name();
    let full = String::from_utf8_lossy(qname.as_ref()).to_string();
    let local = std::str::from_utf8(qname.local_name().into_inner()).map_err(|e| syntax(e.to_string()))?.to_string();
    let page = match qname.prefix() {
        Some(prefix) => {
            let prefix = std::str::from_utf8(prefix.into_inner()).map_err(|e| syntax(e.to_string()))?;
            let declared = prefixes
                .iter()
                .rev()
                .chain(stack.iter().rev().flat_map(|o| o.prefixes.iter().rev()))
                .find(|(p, _)| p == prefix)
                .map(|(_, page)| *page);
            declared
                .or_else(|| PAGES.iter().find(|p| p.name == prefix).map(|p| p.number))
                .ok_or_else(|| XmlError::UnknownNamespace(full.clone()))?
        }
        None => {
            default_page.or_else(|| stack.last().map(|o| o.element.tag.page())).ok_or_else(|| XmlError::UnknownNamespace(full.clone()))?
        }
    };
    let tag = tag_by_local_name(page, &local).ok_or(XmlError::UnknownElement(full))?;
    Ok(Open { element: Element::new(tag), default_page, prefixes, opaque, text: String::new() })
}

fn tag_by_local_name(page: u8, local: &str) -> Option<Tag> {
    let def = PAGES.get(page as usize)?;
    if let Some((token, _)) = def.tags.iter().find(|(_, n)| *n == local) {
        return Some(Tag::new(page, *token));
    }
    // The form `tag_0x3e` that `to_xml` writes for tokens the page does not name.
    let hex = local.strip_prefix("tag_0x")?;
    let token = u8::from_str_radix(hex, 16).ok()?;
    (0x05..=0x3F).contains(&token).then_some(Tag::new(page, token))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wbxml::tag;

    fn sample() -> Element {
        Element::new(tag::air_sync::SYNC).with(
            Element::new(tag::air_sync::COLLECTIONS).with(
                Element::new(tag::air_sync::COLLECTION)
                    .with_text(tag::air_sync::SYNC_KEY, "0")
                    .with_text(tag::air_sync::COLLECTION_ID, "5 & <6>")
                    .with(
                        Element::new(tag::air_sync::OPTIONS)
                            .with(Element::new(tag::air_sync_base::BODY_PREFERENCE).with_text(tag::air_sync_base::TYPE, "2")),
                    )
                    .with(Element::opaque(tag::air_sync::MIME_SUPPORT, vec![0, 159, 146, 150])),
            ),
        )
    }

    #[test]
    fn round_trips_through_prefixed_xml() {
        let tree = sample();
        let xml = to_xml(&tree);
        assert!(xml.contains("<AirSync:SyncKey>0</AirSync:SyncKey>"), "{xml}");
        assert!(xml.contains("xmlns:AirSyncBase="), "{xml}");
        assert_eq!(from_xml(&xml).unwrap(), tree);
    }

    #[test]
    fn reads_the_default_namespace_form() {
        let xml = r#"<?xml version="1.0"?>
<!DOCTYPE ActiveSync PUBLIC "-//MICROSOFT//DTD ActiveSync//EN" "http://www.microsoft.com/">
<Sync xmlns="AirSync:">
<Collections>
<Collection>
<SyncKey>0</SyncKey>
<Options><BodyPreference xmlns="AirSyncBase:"><Type>2</Type></BodyPreference></Options>
</Collection>
</Collections>
</Sync>"#;
        let tree = from_xml(xml).unwrap();
        let collection = tree.child(tag::air_sync::COLLECTIONS).and_then(|c| c.child(tag::air_sync::COLLECTION)).unwrap();
        assert_eq!(collection.child_text(tag::air_sync::SYNC_KEY).as_deref(), Some("0"));
        let pref = collection.child(tag::air_sync::OPTIONS).and_then(|o| o.child(tag::air_sync_base::BODY_PREFERENCE)).unwrap();
        assert_eq!(pref.child_text(tag::air_sync_base::TYPE).as_deref(), Some("2"));
    }

    #[test]
    fn reads_namespaces_in_any_letter_case() {
        // libwbxml prints the GAL page's namespace as "Gal:".
        let xml = r#"<Search xmlns="Search:"><Response><DisplayName xmlns="Gal:">x</DisplayName></Response></Search>"#;
        let tree = from_xml(xml).unwrap();
        let name = tree.child(tag::search::RESPONSE).and_then(|r| r.child(tag::gal::DISPLAY_NAME));
        assert_eq!(name.and_then(Element::text_content).as_deref(), Some("x"));
        assert_eq!(from_xml(r#"<g:DisplayName xmlns:g="gal"/>"#).unwrap().tag, tag::gal::DISPLAY_NAME);
        let names: std::collections::HashSet<String> = PAGES.iter().map(|p| p.name.to_ascii_lowercase()).collect();
        assert_eq!(names.len(), PAGES.len(), "page names must differ in more than case");
    }

    #[test]
    fn rejects_unknown_elements_and_namespaces() {
        assert!(matches!(from_xml("<AirSync:Nope/>"), Err(XmlError::UnknownElement(_))));
        assert!(matches!(from_xml("<Nope:Sync/>"), Err(XmlError::UnknownNamespace(_))));
        assert!(matches!(from_xml("<Sync/>"), Err(XmlError::UnknownNamespace(_))));
        assert!(matches!(from_xml("<AirSync:Sync a=\"1\"/>"), Err(XmlError::UnsupportedAttribute(_))));
        assert!(matches!(from_xml(""), Err(XmlError::NoRootElement)));
        assert!(matches!(from_xml("<AirSync:Sync/><AirSync:Sync/>"), Err(XmlError::MultipleRoots)));
    }

    #[test]
    fn unnamed_tokens_survive_the_text_form() {
        let unnamed = (0x05..=0x3F).map(|t| Tag::new(0, t)).find(|t| t.name().is_none()).expect("AirSync leaves tokens unused");
        let tree = Element::new(tag::air_sync::SYNC).with(Element::new(unnamed));
        let xml = to_xml(&tree);
        assert!(xml.contains("AirSync:tag_0x"), "{xml}");
        assert_eq!(from_xml(&xml).unwrap(), tree);
    }
}
