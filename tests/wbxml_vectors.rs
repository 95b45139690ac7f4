//! Known-answer tests for the WBXML codec: the vectors in `protocol-specs/vectors/`.
//!
//! Every vector is a pair `NAME.xml` (our readable form) / `NAME.wbxml` (bytes from libwbxml, or
//! from our encoder for the vectors the README lists as "our-encoder only"). Every vector must
//! agree with itself through decode, encode and the text form; every vector libwbxml can express
//! is also checked against libwbxml's command-line tools, when they are installed (CI installs
//! them; there the test fails without them).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use pushsync::wbxml::{self, Element, Node, PAGES, Tag};
use quick_xml::events::Event;

const PROLOG: &str =
    "<?xml version=\"1.0\"?>\n<!DOCTYPE ActiveSync PUBLIC \"-//MICROSOFT//DTD ActiveSync//EN\" \"http://www.microsoft.com/\">\n";

/// [MS-ASWBXML] section 3: the spec's own encoding of its example Sync response.
const ASWBXML_EXAMPLE: &str = "03 01 6A 00 45 5C 4F 50 03 43 6F 6E 74 61 63 74 73 00 01 4B 03 32 00 01 52 03 32 00 01 \
     4E 03 31 00 01 56 47 4D 03 32 3A 31 00 01 5D 00 11 4A 46 03 31 00 01 4C 03 30 00 01 4D 03 31 00 01 01 00 01 5E 03 46 \
     75 6E 6B 2C 20 44 6F 6E 00 01 5F 03 44 6F 6E 00 01 69 03 46 75 6E 6B 00 01 00 11 56 03 31 00 01 01 01 01 01 01 01";

fn specs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("protocol-specs")
}

struct Vector {
    name: String,
    xml: String,
    wbxml: Vec<u8>,
}

fn vectors() -> Vec<Vector> {
    let dir = specs_dir().join("vectors");
    let mut names = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).expect("protocol-specs/vectors exists") {
        let path = entry.unwrap().path();
        match path.extension().and_then(|e| e.to_str()) {
            Some("xml") | Some("wbxml") => {
                names.insert(path.file_stem().unwrap().to_str().unwrap().to_string());
            }
            _ => {}
        }
    }
    let out: Vec<Vector> = names
        .into_iter()
        .map(|name| {
            let xml = std::fs::read_to_string(dir.join(format!("{name}.xml")))
                .unwrap_or_else(|e| panic!("{name}.xml: {e} (every vector needs both files)"));
            let wbxml = std::fs::read(dir.join(format!("{name}.wbxml")))
                .unwrap_or_else(|e| panic!("{name}.wbxml: {e} (run protocol-specs/vectors/regenerate.sh)"));
            Vector { name, xml, wbxml }
        })
        .collect();
    assert!(out.len() >= 40, "only {} vectors found in {}", out.len(), dir.display());
    out
}

/// Panics with every failure at once, so one run shows the whole picture.
fn report(what: &str, failures: Vec<String>) {
    if !failures.is_empty() {
        panic!("{what}: {} failure(s)\n\n{}", failures.len(), failures.join("\n\n"));
    }
}

#[test]
fn every_vector_agrees_with_itself() {
    let mut failures = Vec::new();
    for v in vectors() {
        let name = &v.name;
        let from_text = match wbxml::from_xml(&v.xml) {
            Ok(t) => t,
            Err(e) => {
                failures.push(format!("{name}: from_xml: {e}"));
                continue;
            }
        };
        let decoded = match wbxml::decode(&v.wbxml) {
            Ok(t) => t,
            Err(e) => {
                failures.push(format!("{name}: decode: {e}"));
                continue;
            }
        };
        if decoded != from_text {
            failures.push(format!("{name}: decode(wbxml) differs from from_xml(xml)\n{}", first_difference(&decoded, &from_text)));
        }
        let encoded = wbxml::encode(&from_text);
        if encoded != v.wbxml {
            failures.push(format!("{name}: encode(from_xml(xml)) differs from the .wbxml\n{}", byte_difference(&encoded, &v.wbxml)));
        }
        let text = wbxml::to_xml(&decoded);
        match wbxml::from_xml(&text) {
            Ok(back) if back == decoded => {}
            Ok(back) => {
                failures.push(format!("{name}: to_xml(decode(wbxml)) reads back differently\n{}", first_difference(&back, &decoded)))
            }
            Err(e) => failures.push(format!("{name}: to_xml(decode(wbxml)) does not parse: {e}")),
        }
        if text != v.xml {
            failures.push(format!(
                "{name}: the .xml is not in the form to_xml prints (normalise it with `pushsync wbxml encode | pushsync wbxml decode`)"
            ));
        }
    }
    report("vectors", failures);
}

#[test]
fn the_aswbxml_example_is_byte_exact() {
    let spec: Vec<u8> = ASWBXML_EXAMPLE.split_whitespace().map(|b| u8::from_str_radix(b, 16).unwrap()).collect();
    let v = vectors().into_iter().find(|v| v.name == "sync-response-add-contact-aswbxml").expect("the MS-ASWBXML example vector");
    assert_eq!(v.wbxml, spec, "the vector's bytes are not the spec's");
    assert_eq!(wbxml::encode(&wbxml::from_xml(&v.xml).unwrap()), spec);
    let tree = wbxml::decode(&spec).unwrap();
    let app = tree
        .child(wbxml::tag::air_sync::COLLECTIONS)
        .and_then(|c| c.child(wbxml::tag::air_sync::COLLECTION))
        .and_then(|c| c.child(wbxml::tag::air_sync::COMMANDS))
        .and_then(|c| c.child(wbxml::tag::air_sync::ADD))
        .and_then(|c| c.child(wbxml::tag::air_sync::APPLICATION_DATA))
        .expect("Sync/Collections/Collection/Commands/Add/ApplicationData");
    assert_eq!(app.child_text(wbxml::tag::contacts::FILE_AS).as_deref(), Some("Funk, Don"));
}

/// Every command of `commands.toml` with a WBXML request body has at least one request and one
/// response vector whose root is that body's root; every vector is named after a command.
#[test]
fn vectors_cover_every_command() {
    let text = std::fs::read_to_string(specs_dir().join("commands.toml")).unwrap();
    let doc: toml::Value = toml::from_str(&text).unwrap();
    let commands = doc["command"].as_array().expect("[[command]] tables");
    let vectors = vectors();
    let roots: HashMap<&str, Tag> = vectors.iter().map(|v| (v.name.as_str(), wbxml::decode(&v.wbxml).expect(&v.name).tag)).collect();
    let known: HashSet<String> = commands.iter().map(|c| c["name"].as_str().unwrap().to_ascii_lowercase()).collect();

    let mut failures = Vec::new();
    for v in &vectors {
        let parts: Vec<&str> = v.name.split('-').collect();
        if !known.contains(parts[0]) {
            failures.push(format!("{}: does not start with a command name", v.name));
        }
        if !parts.contains(&"request") && !parts.contains(&"response") {
            failures.push(format!("{}: is neither a request nor a response", v.name));
        }
    }
    for c in commands {
        let name = c["name"].as_str().unwrap();
        let root = c["request_root"].as_str().unwrap();
        if root.is_empty() {
            continue; // Autodiscover (plain XML), GetAttachment and GetHierarchy (no WBXML request)
        }
        let (page, tag) = root.split_once(':').unwrap();
        let tag = Tag::by_name(page, tag).unwrap_or_else(|| panic!("{name}: request_root {root} is not a tag"));
        let lower = name.to_ascii_lowercase();
        for kind in ["request", "response"] {
            let found = vectors.iter().any(|v| {
                let parts: Vec<&str> = v.name.split('-').collect();
                parts[0] == lower && parts.contains(&kind) && roots[v.name.as_str()] == tag
            });
            if !found {
                failures.push(format!("{name}: no {kind} vector rooted at {root}"));
            }
        }
    }
    report("command coverage", failures);
}

// ---------------------------------------------------------------------------------------------
// What libwbxml 0.11.8 knows, read from the comments of codepages.toml (the notes there are
// the single record of where libwbxml's tables differ from the spec).

struct Libwbxml {
    /// Page number → libwbxml's namespace for it, or None when libwbxml lacks the page.
    xmlns: HashMap<u8, Option<String>>,
    /// Tags libwbxml spells differently, with its spelling.
    names: HashMap<Tag, String>,
    /// Tags libwbxml cannot encode.
    missing: HashSet<Tag>,
    /// Elements libwbxml treats as binary: base64 in XML, OPAQUE in WBXML.
    binary: HashSet<Tag>,
}

impl Libwbxml {
    fn load() -> Self {
        let text = std::fs::read_to_string(specs_dir().join("codepages.toml")).unwrap();
        let mut lib = Libwbxml { xmlns: HashMap::new(), names: HashMap::new(), missing: HashSet::new(), binary: HashSet::new() };
        let mut pending: Option<Option<String>> = None;
        let mut page: Option<u8> = None;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# libwbxml 0.11.8 namespace: ") {
                pending = Some(rest.strip_prefix('"').and_then(|r| r.split('"').next()).map(str::to_string));
            } else if let Some(n) = line.strip_prefix("number = ") {
                let n: u8 = n.trim().parse().unwrap();
                lib.xmlns.insert(n, pending.take().unwrap_or_else(|| panic!("page {n}: no libwbxml namespace note")));
                page = Some(n);
            } else if let Some(rest) = line.trim_start().strip_prefix("{ token = 0x") {
                let page = page.expect("a tag line inside a page");
                let token = u8::from_str_radix(&rest[..2], 16).unwrap();
                let tag = Tag::new(page, token);
                let comment = line.split_once('#').map(|(_, c)| c).unwrap_or("");
                if let Some((_, after)) = comment.split_once("names this token \"") {
                    lib.names.insert(tag, after.split('"').next().unwrap().to_string());
                }
                if comment.contains("lacks this tag") || lib.xmlns[&page].is_none() {
                    lib.missing.insert(tag);
                }
            }
        }
        assert_eq!(lib.xmlns.len(), PAGES.len(), "a libwbxml namespace note for every page");
        for (page, tag) in [
            ("ResolveRecipients", "Data"),
            ("Search", "ConversationId"),
            ("GAL", "Data"),
            ("AirSyncBase", "Content"),
            ("ItemOperations", "ConversationId"),
            ("ComposeMail", "Mime"),
            ("Email2", "ConversationId"),
            ("Email2", "ConversationIndex"),
        ] {
            lib.binary.insert(Tag::by_name(page, tag).unwrap());
        }
        lib
    }

    fn name(&self, tag: Tag) -> &str {
        self.names.get(&tag).map(String::as_str).or_else(|| tag.name()).expect("named tag")
    }

    /// The spec's tag for libwbxml's name in a page.
    fn tag(&self, page: u8, lib_name: &str) -> Option<Tag> {
        let def = PAGES.get(page as usize)?;
        if let Some((t, _)) = self.names.iter().find(|(t, n)| t.page() == page && n.as_str() == lib_name) {
            return Some(*t);
        }
        def.tags.iter().find(|(t, n)| *n == lib_name && !self.names.contains_key(&Tag::new(page, *t))).map(|(t, _)| Tag::new(page, *t))
    }

    fn page_for_xmlns(&self, ns: &str) -> Option<u8> {
        self.xmlns.iter().find(|(_, x)| x.as_deref() == Some(ns)).map(|(p, _)| *p)
    }

    /// Why libwbxml cannot express this tree (empty when it can).
    fn problems(&self, e: &Element, out: &mut Vec<String>) {
        if e.tag.name().is_none() || self.missing.contains(&e.tag) {
            out.push(format!("{} is unknown to libwbxml", e.tag));
        }
        let has_elements = e.elements().next().is_some();
        let opaque = e.children.iter().filter(|c| matches!(c, Node::Opaque(_))).count();
        let text: Vec<&String> = e.children.iter().filter_map(|c| if let Node::Text(t) = c { Some(t) } else { None }).collect();
        if opaque > 0 && !self.binary.contains(&e.tag) {
            out.push(format!("{} holds opaque data outside libwbxml's binary elements", e.tag));
        }
        if self.binary.contains(&e.tag) && (!text.is_empty() || opaque > 1 || has_elements) {
            out.push(format!("{} is binary to libwbxml but holds text or several nodes", e.tag));
        }
        if has_elements && (opaque > 0 || !text.is_empty()) {
            out.push(format!("{} has mixed content", e.tag));
        }
        if text.iter().any(|t| t.trim() != t.as_str()) {
            out.push(format!("{} has text with leading or trailing white space, which libwbxml trims", e.tag));
        }
        for c in e.elements() {
            self.problems(c, out);
        }
    }

    /// The document in libwbxml's XML form: DOCTYPE, default namespaces, libwbxml's names.
    fn to_xml(&self, root: &Element) -> String {
        let mut out = String::from(PROLOG);
        self.write(&mut out, root, None);
        out.push('\n');
        out
    }

    fn write(&self, out: &mut String, e: &Element, parent_page: Option<u8>) {
        let name = self.name(e.tag);
        let ns = match parent_page {
            Some(p) if p == e.tag.page() => String::new(),
            _ => format!(" xmlns=\"{}\"", self.xmlns[&e.tag.page()].as_deref().expect("a page libwbxml knows")),
        };
        if e.children.is_empty() {
            let _ = write!(out, "<{name}{ns}/>");
            return;
        }
        let _ = write!(out, "<{name}{ns}>");
        for c in &e.children {
            match c {
                Node::Element(child) => self.write(out, child, Some(e.tag.page())),
                Node::Text(t) => out.push_str(&t.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")),
                Node::Opaque(b) => out.push_str(&BASE64.encode(b)),
            }
        }
        let _ = write!(out, "</{name}>");
    }

    /// libwbxml's XML output rewritten to the spec's tag names (namespaces kept as libwbxml
    /// writes them, so `from_xml` must read those), binary elements marked as base64.
    fn rewrite(&self, xml: &str) -> Result<String, String> {
        let mut reader = quick_xml::Reader::from_str(xml);
        let mut out = String::new();
        let mut stack: Vec<(u8, String)> = Vec::new();
        loop {
            let event = reader.read_event().map_err(|e| e.to_string())?;
            match event {
                Event::Start(ref s) | Event::Empty(ref s) => {
                    let local = String::from_utf8(s.local_name().into_inner().to_vec()).map_err(|e| e.to_string())?;
                    let mut xmlns = None;
                    for a in s.attributes() {
                        let a = a.map_err(|e| e.to_string())?;
                        if a.key.as_ref() == b"xmlns" {
                            xmlns = Some(a.unescape_value().map_err(|e| e.to_string())?.to_string());
                        } else {
                            return Err(format!("unexpected attribute on <{local}>"));
                        }
                    }
                    let page = match &xmlns {
                        Some(ns) => self.page_for_xmlns(ns).ok_or_else(|| format!("namespace {ns}"))?,
                        None => stack.last().map(|(p, _)| *p).ok_or("root without a namespace")?,
                    };
                    let tag = self.tag(page, &local).ok_or_else(|| format!("libwbxml tag {local} in page {page}"))?;
                    let name = tag.name().unwrap().to_string();
                    let _ = write!(out, "<{name}");
                    if let Some(ns) = xmlns {
                        let _ = write!(out, " xmlns=\"{ns}\"");
                    }
                    if self.binary.contains(&tag) {
                        out.push_str(" opaque=\"base64\"");
                    }
                    if matches!(event, Event::Empty(_)) {
                        out.push_str("/>");
                    } else {
                        out.push('>');
                        stack.push((page, name));
                    }
                }
                Event::End(_) => {
                    let (_, name) = stack.pop().ok_or("unbalanced end tag")?;
                    let _ = write!(out, "</{name}>");
                }
                Event::Text(t) => {
                    let t = t.decode().map_err(|e| e.to_string())?;
                    out.push_str(&t.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;"));
                }
                Event::GeneralRef(r) => {
                    let r = r.decode().map_err(|e| e.to_string())?;
                    let _ = write!(out, "&{r};");
                }
                Event::DocType(d) => {
                    let d = d.decode().map_err(|e| e.to_string())?;
                    let _ = write!(out, "<!DOCTYPE {d}>");
                }
                Event::Decl(_) => out.push_str("<?xml version=\"1.0\"?>"),
                Event::Eof => break,
                other => return Err(format!("unexpected {other:?}")),
            }
        }
        Ok(out)
    }
}

/// The README's "Our-encoder only" list.
fn ours_only() -> BTreeSet<String> {
    let text = std::fs::read_to_string(specs_dir().join("vectors/README.md")).unwrap();
    let mut in_section = false;
    let mut out = BTreeSet::new();
    for line in text.lines() {
        if line.starts_with("## ") {
            in_section = line.trim().eq_ignore_ascii_case("## Our-encoder only");
        } else if let Some(rest) = line.strip_prefix("- `").filter(|_| in_section) {
            out.insert(rest.split('`').next().unwrap().to_string());
        }
    }
    out
}

#[test]
fn the_our_encoder_only_list_is_exactly_what_libwbxml_cannot_express() {
    let lib = Libwbxml::load();
    let listed = ours_only();
    let mut computed = BTreeSet::new();
    for v in vectors() {
        let mut problems = Vec::new();
        lib.problems(&wbxml::decode(&v.wbxml).unwrap(), &mut problems);
        if !problems.is_empty() {
            computed.insert(v.name);
        }
    }
    assert_eq!(
        listed, computed,
        "protocol-specs/vectors/README.md \"Our-encoder only\" list (left) vs vectors libwbxml cannot express (right)"
    );
    // The cross-check covers the large majority, and at least one vector of each kind is ours only.
    assert!(computed.len() * 5 < vectors().len(), "{} of the vectors are ours only", computed.len());
    assert!(computed.iter().any(|n| n.starts_with("find-")), "a Find vector");
}

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

fn installed(tool: &str) -> bool {
    match Command::new(tool).output() {
        Ok(_) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => panic!("cannot run {tool}: {e}"),
    }
}

fn run(tool: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(tool).args(args).output().map_err(|e| format!("{tool}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{tool} {}: {}{}", args.join(" "), String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    }
}

#[test]
fn libwbxml_agrees_with_every_vector_it_can_express() {
    if !installed("wbxml2xml") || !installed("xml2wbxml") {
        let msg = "libwbxml's wbxml2xml/xml2wbxml are not on PATH: the WBXML vectors were NOT cross-checked \
                   against an independent codec (install libwbxml2-utils)";
        if ci() {
            panic!("{msg}");
        }
        eprintln!("\n{}\n!!! {msg}\n{}\n", "!".repeat(100), "!".repeat(100));
        return;
    }
    let lib = Libwbxml::load();
    let ours_only = ours_only();
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let mut failures = Vec::new();
    let mut checked = 0;
    for v in vectors() {
        if ours_only.contains(&v.name) {
            continue;
        }
        let name = &v.name;
        let tree = wbxml::decode(&v.wbxml).unwrap();

        // libwbxml decodes the vector; mapped back to the spec's names, it is our tree.
        let (input, output) = (path(&format!("{name}.wbxml")), path(&format!("{name}.lib.xml")));
        std::fs::write(&input, &v.wbxml).unwrap();
        match run("wbxml2xml", &["-l", "ACTIVESYNC", "-m", "0", "-o", &output, &input]) {
            Err(e) => failures.push(format!("{name}: {e}")),
            Ok(()) => {
                let printed = std::fs::read_to_string(&output).unwrap();
                match lib
                    .rewrite(&printed)
                    .map_err(|e| format!("rewrite: {e}"))
                    .and_then(|x| wbxml::from_xml(&x).map_err(|e| e.to_string()))
                {
                    Ok(theirs) if theirs == tree => {}
                    Ok(theirs) => failures.push(format!("{name}: libwbxml decodes to another tree\n{}", first_difference(&theirs, &tree))),
                    Err(e) => failures.push(format!("{name}: libwbxml's output does not read back: {e}\n{printed}")),
                }
            }
        }

        // libwbxml encodes the vector's XML to the same bytes as our encoder, and its default
        // form (public id and strings in a string table) decodes to the same tree.
        let lib_xml = path(&format!("{name}.in.xml"));
        std::fs::write(&lib_xml, lib.to_xml(&tree)).unwrap();
        let (compact, default) = (path(&format!("{name}.compact.wbxml")), path(&format!("{name}.default.wbxml")));
        match run("xml2wbxml", &["-a", "-n", "-o", &compact, &lib_xml]) {
            Err(e) => failures.push(format!("{name}: {e}")),
            Ok(()) => {
                let theirs = std::fs::read(&compact).unwrap();
                let ours = wbxml::encode(&tree);
                if theirs != ours {
                    failures.push(format!("{name}: xml2wbxml -a -n and our encoder differ\n{}", byte_difference(&ours, &theirs)));
                }
            }
        }
        match run("xml2wbxml", &["-o", &default, &lib_xml]) {
            Err(e) => failures.push(format!("{name}: {e}")),
            Ok(()) => {
                let bytes = std::fs::read(&default).unwrap();
                assert_eq!(bytes[1], 0x00, "{name}: libwbxml's default form gives the public id as a string-table index");
                match wbxml::decode(&bytes) {
                    Ok(t) if t == tree => {}
                    Ok(t) => {
                        failures.push(format!("{name}: libwbxml's default form decodes to another tree\n{}", first_difference(&t, &tree)))
                    }
                    Err(e) => failures.push(format!("{name}: libwbxml's default form does not decode: {e}")),
                }
            }
        }
        checked += 1;
    }
    report("libwbxml cross-check", failures);
    assert!(checked >= 40, "only {checked} vectors were cross-checked");
}

/// Where two trees first differ, as a path and both subtrees' text.
fn first_difference(a: &Element, b: &Element) -> String {
    fn walk(a: &Element, b: &Element, path: &mut Vec<String>) -> Option<String> {
        path.push(a.tag.to_string());
        if a.tag != b.tag || a.children.len() != b.children.len() {
            return Some(format!("at /{}:\n  left:  {:?}\n  right: {:?}", path.join("/"), a, b));
        }
        for (x, y) in a.children.iter().zip(&b.children) {
            match (x, y) {
                (Node::Element(x), Node::Element(y)) => {
                    if let Some(d) = walk(x, y, path) {
                        return Some(d);
                    }
                }
                (x, y) if x != y => return Some(format!("at /{}:\n  left:  {x:?}\n  right: {y:?}", path.join("/"))),
                _ => {}
            }
        }
        path.pop();
        None
    }
    walk(a, b, &mut Vec::new()).unwrap_or_else(|| "(no difference)".into())
}

fn byte_difference(a: &[u8], b: &[u8]) -> String {
    let at = a.iter().zip(b).position(|(x, y)| x != y).unwrap_or(a.len().min(b.len()));
    let window = |s: &[u8]| s[at.saturating_sub(8)..(at + 8).min(s.len())].iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(" ");
    format!("  first difference at byte {at} (lengths {} and {})\n  left:  … {}\n  right: … {}", a.len(), b.len(), window(a), window(b))
}
