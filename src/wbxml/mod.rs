//! WBXML 1.3 codec for ActiveSync, sans I/O.
//!
//! Owns the translation between WBXML bytes and an [`Element`] tree, and between that tree and
//! a readable XML text form (for administrators and test vectors). It knows the ActiveSync code
//! pages, generated from `protocol-specs/codepages.toml`, and nothing about what the elements
//! mean: commands live in [`crate::eas`]. It never touches a socket or a file, and decoding
//! arbitrary bytes is bounded by [`Limits`]: it returns a [`DecodeError`], never panics.

mod decode;
mod encode;
mod tree;
mod xml;

pub use decode::{DecodeError, Limits, decode, decode_with};
pub use encode::encode;
pub use tree::{Element, Node};
pub use xml::{XmlError, from_xml, to_xml};

/// A code page: its number, its namespace name and its tags (token, name).
#[derive(Debug)]
pub struct PageDef {
    pub number: u8,
    pub name: &'static str,
    pub xmlns: &'static str,
    pub tags: &'static [(u8, &'static str)],
}

mod generated {
    use super::PageDef;
    include!(concat!(env!("OUT_DIR"), "/codepages.rs"));
}

pub use generated::{PAGES, tag};

/// An element name: a code page and a token within it. Tokens the page does not define are
/// representable (a newer client may send them); they simply have no name.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag {
    page: u8,
    token: u8,
}

impl Tag {
    pub const fn new(page: u8, token: u8) -> Self {
        Tag { page, token }
    }

    pub const fn page(self) -> u8 {
        self.page
    }

    pub const fn token(self) -> u8 {
        self.token
    }

    /// The code page definition, if the page number is one ActiveSync defines.
    pub fn page_def(self) -> Option<&'static PageDef> {
        PAGES.get(self.page as usize)
    }

    /// The tag's name in its page (`SyncKey`), if the page defines this token.
    pub fn name(self) -> Option<&'static str> {
        let page = self.page_def()?;
        page.tags.iter().find(|(t, _)| *t == self.token).map(|(_, n)| *n)
    }

    /// Looks a tag up by page name and tag name (`"AirSync"`, `"SyncKey"`).
    pub fn by_name(page_name: &str, tag_name: &str) -> Option<Tag> {
        let page = PAGES.iter().find(|p| p.name == page_name)?;
        page.tags.iter().find(|(_, n)| *n == tag_name).map(|(t, _)| Tag::new(page.number, *t))
    }
}

impl std::fmt::Debug for Tag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// `AirSync:SyncKey`, or `AirSync:tag_0x3e` for a token the page does not name.
impl std::fmt::Display for Tag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.page_def(), self.name()) {
            (Some(p), Some(n)) => write!(f, "{}:{}", p.name, n),
            (Some(p), None) => write!(f, "{}:tag_{:#04x}", p.name, self.token),
            (None, _) => write!(f, "page{}:tag_{:#04x}", self.page, self.token),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn there_are_26_pages_numbered_in_order() {
        assert_eq!(PAGES.len(), 26);
        for (i, p) in PAGES.iter().enumerate() {
            assert_eq!(p.number as usize, i);
            // AirNotify (page 3) is reserved and empty since protocol 12.0.
            assert_eq!(p.tags.is_empty(), p.name == "AirNotify", "page {}", p.name);
        }
    }

    #[test]
    fn generated_constants_match_the_table() {
        assert_eq!(tag::air_sync::SYNC.name(), Some("Sync"));
        assert_eq!(tag::air_sync::SYNC, Tag::new(0, 0x05));
        assert_eq!(tag::air_sync::SYNC_KEY, Tag::new(0, 0x0B));
        assert_eq!(tag::folder_hierarchy::FOLDER_SYNC, Tag::new(7, 0x16));
        assert_eq!(tag::ping::PING, Tag::new(13, 0x05));
        assert_eq!(tag::provision::PROVISION, Tag::new(14, 0x05));
        assert_eq!(Tag::by_name("AirSyncBase", "Body"), Some(tag::air_sync_base::BODY));
    }

    #[test]
    fn unknown_tokens_display_without_a_name() {
        let t = Tag::new(0, 0x3F);
        assert!(t.to_string().starts_with("AirSync:"));
        assert_eq!(Tag::new(200, 5).page_def().map(|p| p.name), None);
    }
}
