//! The element tree both sides of the codec share.
//!
//! A tree is normalised: text nodes are never empty and never adjacent, so that
//! `decode(encode(t)) == t` holds for every tree the builders can produce.

use super::Tag;

/// One element: a tag and its content, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    pub tag: Tag,
    pub children: Vec<Node>,
}

/// Content of an element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Element(Element),
    /// Inline or string-table text (UTF-8).
    Text(String),
    /// WBXML OPAQUE bytes (MIME data, conversation ids, ...).
    Opaque(Vec<u8>),
}

impl Element {
    pub fn new(tag: Tag) -> Self {
        Element { tag, children: Vec::new() }
    }

    /// An element holding only `text`.
    pub fn text(tag: Tag, text: impl Into<String>) -> Self {
        let mut e = Element::new(tag);
        e.push_text(text);
        e
    }

    /// An element holding only opaque bytes.
    pub fn opaque(tag: Tag, bytes: impl Into<Vec<u8>>) -> Self {
        let mut e = Element::new(tag);
        let bytes = bytes.into();
        e.children.push(Node::Opaque(bytes));
        e
    }

    /// Appends a child element (builder style).
    pub fn with(mut self, child: Element) -> Self {
        self.children.push(Node::Element(child));
        self
    }

    /// Appends a child element holding `text` (builder style).
    pub fn with_text(self, tag: Tag, text: impl Into<String>) -> Self {
        self.with(Element::text(tag, text))
    }

    /// Appends a child element.
    pub fn push(&mut self, child: Element) {
        self.children.push(Node::Element(child));
    }

    /// Appends a child element holding `text`.
    pub fn push_text_child(&mut self, tag: Tag, text: impl Into<String>) {
        self.push(Element::text(tag, text));
    }

    /// Appends text, merging with a preceding text node and dropping empty text.
    pub fn push_text(&mut self, text: impl Into<String>) {
        let text = text.into();
        if text.is_empty() {
            return;
        }
        match self.children.last_mut() {
            Some(Node::Text(prev)) => prev.push_str(&text),
            _ => self.children.push(Node::Text(text)),
        }
    }

    /// Child elements, in order.
    pub fn elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            _ => None,
        })
    }

    /// The first child element with this tag.
    pub fn child(&self, tag: Tag) -> Option<&Element> {
        self.elements().find(|e| e.tag == tag)
    }

    /// Every child element with this tag.
    pub fn children_with(&self, tag: Tag) -> impl Iterator<Item = &Element> {
        self.elements().filter(move |e| e.tag == tag)
    }

    /// The element's text content (text nodes concatenated; opaque bytes that are UTF-8 count
    /// as text too, since some clients send strings as OPAQUE).
    pub fn text_content(&self) -> Option<String> {
        let mut out: Option<String> = None;
        for n in &self.children {
            let piece = match n {
                Node::Text(t) => t.as_str(),
                Node::Opaque(b) => match std::str::from_utf8(b) {
                    Ok(s) => s,
                    Err(_) => continue,
                },
                Node::Element(_) => continue,
            };
            out.get_or_insert_with(String::new).push_str(piece);
        }
        out
    }

    /// The text of the first child with this tag.
    pub fn child_text(&self, tag: Tag) -> Option<String> {
        self.child(tag).map(|c| c.text_content().unwrap_or_default())
    }

    /// The element's bytes: opaque content, or the UTF-8 of its text.
    pub fn bytes_content(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for n in &self.children {
            match n {
                Node::Text(t) => out.extend_from_slice(t.as_bytes()),
                Node::Opaque(b) => out.extend_from_slice(b),
                Node::Element(_) => {}
            }
        }
        out
    }

    /// Number of elements in this subtree, this one included.
    pub fn element_count(&self) -> usize {
        1 + self.elements().map(Element::element_count).sum::<usize>()
    }
}
