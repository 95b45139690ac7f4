//! Generates the protocol tables from the data files in `protocol-specs/`.
//!
//! `protocol-specs/` is the single source of truth for the WBXML code pages, the EAS status
//! codes and the command catalogue; this script turns them into Rust so that a tag or a status
//! the data does not define is a compile error, and nobody types a token twice.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use serde::Deserialize;

#[derive(Deserialize)]
struct CodePages {
    page: Vec<Page>,
}

#[derive(Deserialize)]
struct Page {
    number: u8,
    name: String,
    #[serde(default)]
    xmlns: Option<String>,
    tags: Vec<TagDef>,
}

#[derive(Deserialize)]
struct TagDef {
    token: u8,
    name: String,
}

#[derive(Deserialize)]
struct StatusFile {
    common: StatusList,
    command: Vec<StatusList>,
}

#[derive(Deserialize)]
struct StatusList {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    source: Option<String>,
    statuses: Vec<StatusDef>,
}

#[derive(Deserialize)]
struct StatusDef {
    code: u16,
    name: String,
    meaning: String,
}

#[derive(Deserialize)]
struct CommandFile {
    command: Vec<CommandDef>,
    query_parameter: Vec<QueryParamDef>,
}

#[derive(Deserialize)]
struct CommandDef {
    name: String,
    /// Absent for commands the base64 query cannot name (Autodiscover, GetHierarchy).
    #[serde(default)]
    code: Option<u8>,
    versions: Vec<String>,
    request_root: String,
}

#[derive(Deserialize)]
struct QueryParamDef {
    code: u8,
    name: String,
}

fn main() {
    let specs = Path::new("protocol-specs");
    for file in ["codepages.toml", "status-codes.toml", "commands.toml"] {
        println!("cargo:rerun-if-changed=protocol-specs/{file}");
    }
    let out_dir = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    let out = Path::new(&out_dir);

    let pages: CodePages = load(&specs.join("codepages.toml"));
    write(&out.join("codepages.rs"), &gen_codepages(&pages));

    let statuses: StatusFile = load(&specs.join("status-codes.toml"));
    write(&out.join("status_codes.rs"), &gen_statuses(&statuses));

    let commands: CommandFile = load(&specs.join("commands.toml"));
    write(&out.join("commands.rs"), &gen_commands(&commands));
}

fn load<T: for<'de> Deserialize<'de>>(path: &Path) -> T {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    toml::from_str(&text).unwrap_or_else(|e| panic!("{} is not valid: {e}", path.display()))
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

/// `MIMESupport` → `MIME_SUPPORT`, `UmCallerID` → `UM_CALLER_ID`, `Email2` → `EMAIL2`.
fn screaming_snake(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            let prev = chars[i - 1];
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase());
            if prev.is_ascii_lowercase() || (prev.is_ascii_uppercase() && next_lower) {
                out.push('_');
            }
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// `AirSyncBase` → `air_sync_base`; `Move` → `move_` (a keyword otherwise).
fn snake(name: &str) -> String {
    let s = screaming_snake(name).to_ascii_lowercase();
    match s.as_str() {
        "move" => "move_".to_string(),
        _ => s,
    }
}

fn gen_codepages(pages: &CodePages) -> String {
    let mut numbers = BTreeSet::new();
    let mut out = String::new();
    out.push_str("/// Every code page, indexed by page number.\npub static PAGES: &[PageDef] = &[\n");
    for (i, page) in pages.page.iter().enumerate() {
        assert_eq!(page.number as usize, i, "code pages must be listed in order without gaps");
        assert!(numbers.insert(page.number));
        let mut tokens = BTreeSet::new();
        let mut names = BTreeSet::new();
        let _ = writeln!(
            out,
            "    PageDef {{ number: {}, name: {:?}, xmlns: {:?}, tags: &[",
            page.number,
            page.name,
            page.xmlns.clone().unwrap_or_else(|| format!("{}:", page.name))
        );
        for tag in &page.tags {
            assert!(
                (0x05..=0x3F).contains(&tag.token),
                "page {} tag {} has token {:#04x} outside 0x05..=0x3F",
                page.name,
                tag.name,
                tag.token
            );
            assert!(tokens.insert(tag.token), "page {} repeats token {:#04x}", page.name, tag.token);
            assert!(names.insert(tag.name.clone()), "page {} repeats tag {}", page.name, tag.name);
            let _ = writeln!(out, "        ({:#04x}, {:?}),", tag.token, tag.name);
        }
        out.push_str("    ] },\n");
    }
    out.push_str("];\n\n");

    out.push_str("/// Named constants for every tag: `tag::air_sync::SYNC_KEY`.\n#[allow(dead_code)]\npub mod tag {\n");
    for page in &pages.page {
        let _ = writeln!(
            out,
            "    /// Code page {}: {}.\n    #[allow(unused_imports)]\n    pub mod {} {{\n        use crate::wbxml::Tag;",
            page.number,
            page.name,
            snake(&page.name)
        );
        let mut consts = BTreeSet::new();
        for tag in &page.tags {
            let c = screaming_snake(&tag.name);
            assert!(consts.insert(c.clone()), "page {} has two tags named {c}", page.name);
            let _ = writeln!(out, "        pub const {c}: Tag = Tag::new({}, {:#04x});", page.number, tag.token);
        }
        out.push_str("    }\n");
    }
    out.push_str("}\n");
    out
}

fn gen_statuses(file: &StatusFile) -> String {
    let mut out = String::new();
    let mut seen = BTreeMap::new();
    out.push_str(&status_enum(
        "CommonStatus",
        "common status codes (protocol 14.0 and later)",
        file.common.source.as_deref(),
        &file.common.statuses,
    ));
    for list in &file.command {
        let name = list.name.clone().expect("every [[command]] status list has a name");
        assert!(seen.insert(name.clone(), ()).is_none(), "status list {name} appears twice");
        out.push_str(&status_enum(&format!("{name}Status"), &format!("{name} status codes"), list.source.as_deref(), &list.statuses));
    }
    out
}

fn status_enum(ty: &str, what: &str, source: Option<&str>, statuses: &[StatusDef]) -> String {
    let mut codes = BTreeSet::new();
    let mut names = BTreeSet::new();
    let mut out = String::new();
    let _ = writeln!(out, "/// The {what}{}.", source.map(|s| format!(", from {s}")).unwrap_or_default());
    let _ = writeln!(out, "#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]\n#[allow(dead_code)]\npub enum {ty} {{");
    for s in statuses {
        assert!(codes.insert(s.code), "{ty} repeats code {}", s.code);
        assert!(names.insert(s.name.clone()), "{ty} repeats name {}", s.name);
        let _ = writeln!(out, "    /// {}\n    {} = {},", s.meaning.replace('\n', " "), s.name, s.code);
    }
    out.push_str("}\n\n");
    let _ = writeln!(out, "#[allow(dead_code)]\nimpl {ty} {{");
    out.push_str("    /// The numeric code sent in the `Status` element.\n    pub const fn code(self) -> u16 { self as u16 }\n\n");
    out.push_str("    /// The status with this code, if the protocol defines one.\n    pub fn from_code(code: u16) -> Option<Self> {\n        match code {\n");
    for s in statuses {
        let _ = writeln!(out, "            {} => Some(Self::{}),", s.code, s.name);
    }
    out.push_str("            _ => None,\n        }\n    }\n\n");
    out.push_str(
        "    /// What the specification says the status means.\n    pub fn meaning(self) -> &'static str {\n        match self {\n",
    );
    for s in statuses {
        let _ = writeln!(out, "            Self::{} => {:?},", s.name, s.meaning);
    }
    out.push_str("        }\n    }\n}\n\n");
    out
}

fn gen_commands(file: &CommandFile) -> String {
    let mut out = String::new();
    let mut names = BTreeSet::new();
    let mut codes = BTreeSet::new();
    out.push_str("/// Every command of the catalogue.\n#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]\npub enum Command {\n");
    for c in &file.command {
        assert!(names.insert(c.name.clone()), "command {} listed twice", c.name);
        if let Some(code) = c.code {
            assert!(codes.insert(code), "command code {code} listed twice");
        }
        let _ = writeln!(out, "    /// `Cmd={}`, base64 query code {:?}.\n    {},", c.name, c.code, c.name);
    }
    out.push_str("}\n\nimpl Command {\n    pub const ALL: &'static [Command] = &[\n");
    for c in &file.command {
        let _ = writeln!(out, "        Command::{},", c.name);
    }
    out.push_str("    ];\n\n    /// The name used in `Cmd=`.\n    pub fn name(self) -> &'static str {\n        match self {\n");
    for c in &file.command {
        let _ = writeln!(out, "            Command::{0} => {0:?},", c.name);
    }
    out.push_str("        }\n    }\n\n    /// The base64 query's command code, if it has one.\n    pub fn code(self) -> Option<u8> {\n        match self {\n");
    for c in &file.command {
        let _ = writeln!(out, "            Command::{} => {:?},", c.name, c.code);
    }
    out.push_str("        }\n    }\n\n    /// Protocol versions (\"12.0\" ... \"16.1\") that define the command.\n    pub fn versions(self) -> &'static [&'static str] {\n        match self {\n");
    for c in &file.command {
        let _ = writeln!(out, "            Command::{} => &{:?},", c.name, c.versions);
    }
    out.push_str("        }\n    }\n\n    /// Root element of the request body, `(page, tag)`; `None` for commands without one.\n    pub fn request_root(self) -> Option<(&'static str, &'static str)> {\n        match self {\n");
    for c in &file.command {
        match c.request_root.split_once(':') {
            Some((page, tag)) => {
                let _ = writeln!(out, "            Command::{} => Some(({page:?}, {tag:?})),", c.name);
            }
            None => {
                let _ = writeln!(out, "            Command::{} => None,", c.name);
            }
        }
    }
    out.push_str("        }\n    }\n\n    pub fn from_name(name: &str) -> Option<Command> {\n        Self::ALL.iter().copied().find(|c| c.name() == name)\n    }\n\n    pub fn from_code(code: u8) -> Option<Command> {\n        Self::ALL.iter().copied().find(|c| c.code() == Some(code))\n    }\n}\n\n");
    out.push_str("/// The base64 query's parameter codes: (code, name).\npub static QUERY_PARAMETERS: &[(u8, &str)] = &[\n");
    for p in &file.query_parameter {
        let _ = writeln!(out, "    ({}, {:?}),", p.code, p.name);
    }
    out.push_str("];\n");
    out
}
