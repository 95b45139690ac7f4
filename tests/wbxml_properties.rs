//! Property tests for the WBXML codec.
//!
//! Trees are generated normalised, as the decoder produces them: tags from the generated code
//! pages (mostly named tokens, sometimes tokens a page leaves unnamed), text never empty and
//! never containing NUL, opaque blocks never empty, no two text nodes adjacent, nesting at most
//! 8 deep.
//!
//! What the XML text form guarantees is narrower than what WBXML carries, and the generator for
//! that property is restricted to exactly this:
//! * text consists of XML 1.0 characters (tab, line feed, carriage return, and U+0020 upwards
//!   without surrogates, U+FFFE and U+FFFF); `to_xml` escapes `& < > "` and carriage return;
//! * a text node is never white space only: white space between elements is layout and is
//!   dropped when reading (leading and trailing white space around other text is kept);
//! * opaque data is only the single child of an element (`opaque="base64"` holds one block;
//!   several blocks, or opaque data next to text or elements, are not representable).

use base64::Engine as _;
use proptest::prelude::*;
use proptest::sample::Index;
use pushsync::wbxml::{self, DecodeError, Element, Limits, Node, PAGES, Tag};

#[derive(Clone, Copy, Debug)]
enum Form {
    /// Anything WBXML can carry.
    Wbxml,
    /// What the XML text form can carry (see the module comment).
    Xml,
}

fn arb_tag() -> impl Strategy<Value = Tag> {
    (0..PAGES.len(), any::<Index>(), 0u8..10, 0x05u8..=0x3F).prop_map(|(p, index, roll, raw)| {
        let page = &PAGES[p];
        if roll == 0 || page.tags.is_empty() {
            Tag::new(page.number, raw)
        } else {
            Tag::new(page.number, page.tags[index.index(page.tags.len())].0)
        }
    })
}

fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

fn arb_text(form: Form) -> BoxedStrategy<String> {
    match form {
        Form::Wbxml => {
            proptest::collection::vec(any::<char>().prop_filter("no NUL", |&c| c != '\0'), 1..24).prop_map(String::from_iter).boxed()
        }
        Form::Xml => {
            let chars = proptest::collection::vec(any::<char>().prop_filter("XML character", |&c| is_xml_char(c)), 1..24)
                .prop_map(String::from_iter);
            // Also text with white space around it, and the characters to_xml must escape.
            let padded = ("[ \t\r\n]{0,3}", "[a-z&<>\"'\r]{1,6}", "[ \t\r\n]{0,3}").prop_map(|(a, b, c)| format!("{a}{b}{c}"));
            prop_oneof![chars, padded].prop_filter("not white space only", |s| !s.trim().is_empty()).boxed()
        }
    }
}

fn arb_opaque() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 1..24)
}

/// Normalised trees up to 8 levels deep: a root element over subtrees of up to 7 levels (the
/// depth argument of `prop_recursive` counts container levels above the leaves).
fn arb_tree(form: Form) -> BoxedStrategy<Element> {
    let leaf = prop_oneof![
        arb_tag().prop_map(Element::new),
        (arb_tag(), arb_text(form)).prop_map(|(t, s)| Element::text(t, s)),
        (arb_tag(), arb_opaque()).prop_map(|(t, b)| Element::opaque(t, b)),
    ];
    let subtree = leaf.prop_recursive(6, 512, 2, move |inner| container(inner, form, 0..5));
    container(subtree.boxed(), form, 1..6)
}

/// An element over a mix of `inner` elements and (for WBXML) text and opaque nodes.
fn container(inner: BoxedStrategy<Element>, form: Form, len: std::ops::Range<usize>) -> BoxedStrategy<Element> {
    let node = match form {
        Form::Wbxml => prop_oneof![
            6 => inner.prop_map(Node::Element),
            1 => arb_text(form).prop_map(Node::Text),
            1 => arb_opaque().prop_map(Node::Opaque),
        ]
        .boxed(),
        Form::Xml => prop_oneof![6 => inner.prop_map(Node::Element), 1 => arb_text(form).prop_map(Node::Text)].boxed(),
    };
    (arb_tag(), proptest::collection::vec(node, len))
        .prop_map(|(tag, nodes)| {
            let mut e = Element::new(tag);
            for n in nodes {
                match n {
                    // Merges with a preceding text node: no two text nodes are adjacent.
                    Node::Text(t) => e.push_text(t),
                    other => e.children.push(other),
                }
            }
            e
        })
        .boxed()
}

fn depth(e: &Element) -> usize {
    1 + e.elements().map(depth).max().unwrap_or(0)
}

/// Bytes of text and opaque data in the tree, and the longest single opaque block.
fn content(e: &Element) -> (usize, usize) {
    let mut total = 0;
    let mut longest_opaque = 0;
    for n in &e.children {
        match n {
            Node::Element(c) => {
                let (t, o) = content(c);
                total += t;
                longest_opaque = longest_opaque.max(o);
            }
            Node::Text(t) => total += t.len(),
            Node::Opaque(b) => {
                total += b.len();
                longest_opaque = longest_opaque.max(b.len());
            }
        }
    }
    (total, longest_opaque)
}

fn longest_text(e: &Element) -> usize {
    e.children
        .iter()
        .map(|n| match n {
            Node::Element(c) => longest_text(c),
            Node::Text(t) => t.len(),
            Node::Opaque(_) => 0,
        })
        .max()
        .unwrap_or(0)
}

fn is_normalised(e: &Element) -> bool {
    let mut previous_text = false;
    for n in &e.children {
        match n {
            Node::Text(t) if t.is_empty() || t.contains('\0') || previous_text => return false,
            Node::Opaque(b) if b.is_empty() => return false,
            Node::Element(c) if !is_normalised(c) => return false,
            _ => {}
        }
        previous_text = matches!(n, Node::Text(_));
    }
    true
}

/// Checks a successfully decoded tree against the limits it was decoded under.
fn assert_within(tree: &Element, limits: &Limits) -> Result<(), TestCaseError> {
    let (total, longest_opaque) = content(tree);
    prop_assert!(depth(tree) <= limits.max_depth, "depth {} > {}", depth(tree), limits.max_depth);
    prop_assert!(tree.element_count() <= limits.max_elements, "{} elements > {}", tree.element_count(), limits.max_elements);
    prop_assert!(longest_opaque <= limits.max_string_len, "opaque block of {longest_opaque} > {}", limits.max_string_len);
    prop_assert!(total <= limits.max_content_len, "content {total} > {}", limits.max_content_len);
    prop_assert!(is_normalised(tree), "decoded tree is not normalised: {tree:?}");
    Ok(())
}

fn mb_u32(out: &mut Vec<u8>, v: u32) {
    let mut groups = vec![(v & 0x7F) as u8];
    let mut v = v >> 7;
    while v > 0 {
        groups.push(0x80 | (v & 0x7F) as u8);
        v >>= 7;
    }
    out.extend(groups.iter().rev());
}

/// The tree encoded the way libwbxml does by default: public identifier given as a string-table
/// index, every text in the string table and referenced with STR_T.
fn encode_with_string_table(root: &Element) -> Vec<u8> {
    let mut table = b"-//MICROSOFT//DTD ActiveSync//EN\0".to_vec();
    let mut offsets = std::collections::HashMap::new();
    let mut body = Vec::new();
    let mut page = 0u8;
    fn walk(e: &Element, page: &mut u8, body: &mut Vec<u8>, table: &mut Vec<u8>, offsets: &mut std::collections::HashMap<String, usize>) {
        if e.tag.page() != *page {
            body.extend([0x00, e.tag.page()]);
            *page = e.tag.page();
        }
        if e.children.is_empty() {
            body.push(e.tag.token());
            return;
        }
        body.push(e.tag.token() | 0x40);
        for n in &e.children {
            match n {
                Node::Element(c) => walk(c, page, body, table, offsets),
                Node::Text(t) => {
                    let offset = *offsets.entry(t.clone()).or_insert_with(|| {
                        let at = table.len();
                        table.extend_from_slice(t.as_bytes());
                        table.push(0);
                        at
                    });
                    body.push(0x83);
                    mb_u32(body, offset as u32);
                }
                Node::Opaque(b) => {
                    body.push(0xC3);
                    mb_u32(body, b.len() as u32);
                    body.extend_from_slice(b);
                }
            }
        }
        body.push(0x01);
    }
    walk(root, &mut page, &mut body, &mut table, &mut offsets);
    let mut out = vec![0x03, 0x00, 0x00, 0x6A]; // version 1.3, public id in the table at 0, UTF-8
    mb_u32(&mut out, table.len() as u32);
    out.extend_from_slice(&table);
    out.extend_from_slice(&body);
    out
}

#[derive(Clone, Debug)]
enum Mutation {
    Flip { at: Index, bit: u8 },
    Set { at: Index, byte: u8 },
    Truncate { at: Index },
    Insert { at: Index, bytes: Vec<u8> },
    Remove { at: Index, len: usize },
}

fn arb_mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        (any::<Index>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Set { at, byte }),
        any::<Index>().prop_map(|at| Mutation::Truncate { at }),
        (any::<Index>(), proptest::collection::vec(any::<u8>(), 1..6)).prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (any::<Index>(), 1usize..6).prop_map(|(at, len)| Mutation::Remove { at, len }),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        if bytes.is_empty() {
            break;
        }
        match m {
            Mutation::Flip { at, bit } => {
                let i = at.index(bytes.len());
                bytes[i] ^= 1 << bit;
            }
            Mutation::Set { at, byte } => {
                let i = at.index(bytes.len());
                bytes[i] = *byte;
            }
            Mutation::Truncate { at } => bytes.truncate(at.index(bytes.len())),
            Mutation::Insert { at, bytes: new } => {
                let i = at.index(bytes.len() + 1);
                bytes.splice(i..i, new.iter().copied());
            }
            Mutation::Remove { at, len } => {
                let i = at.index(bytes.len());
                bytes.drain(i..(i + len).min(bytes.len()));
            }
        }
    }
    bytes
}

/// Anything `decode` accepts survives re-encoding and stays within the limits.
fn check_decoded(bytes: &[u8], limits: &Limits) -> Result<(), TestCaseError> {
    if let Ok(tree) = wbxml::decode_with(bytes, limits) {
        assert_within(&tree, limits)?;
        let again = wbxml::decode(&wbxml::encode(&tree));
        prop_assert_eq!(again, Ok(tree));
    }
    Ok(())
}

/// Documents assembled from WBXML tokens: element starts (with and without content) nesting
/// other tokens up to END, SWITCH_PAGE, STR_I, ENTITY (including code points that are not
/// characters), STR_T (in and out of range), OPAQUE, and now and then a stray byte, after a
/// header with or without a string table. Most of them are well formed, so the decoder's
/// handling of each token is reached far more often than with random bytes.
fn arb_token_soup() -> impl Strategy<Value = Vec<u8>> {
    let content = prop_oneof![
        2 => (0x05u8..=0x3F).prop_map(|t| vec![t]),
        1 => (0u8..27).prop_map(|p| vec![0x00, p]),
        2 => "[a-z\u{e9}\u{20ac}]{0,4}".prop_map(|t| [&[0x03][..], t.as_bytes(), &[0x00]].concat()),
        1 => prop_oneof![Just(0u32), Just(0x41), Just(0xE9), Just(0x1F600), Just(0xD800), Just(0x11_0000), any::<u32>()]
            .prop_map(|cp| { let mut v = vec![0x02]; mb_u32(&mut v, cp); v }),
        1 => (0u32..20).prop_map(|at| { let mut v = vec![0x83]; mb_u32(&mut v, at); v }),
        1 => proptest::collection::vec(any::<u8>(), 0..5).prop_map(|b| { let mut v = vec![0xC3]; mb_u32(&mut v, b.len() as u32); v.extend(b); v }),
        1 => any::<u8>().prop_map(|b| vec![b]),
    ];
    let element = |kids: BoxedStrategy<Vec<u8>>| {
        (0x05u8..=0x3F, proptest::collection::vec(kids, 0..5)).prop_map(|(t, kids)| [vec![t | 0x40], kids.concat(), vec![0x01]].concat())
    };
    let nested = content.prop_recursive(5, 64, 4, move |inner| element(inner.boxed()));
    let root = element(nested.boxed());
    (any::<bool>(), "[a-z]{0,3}(\\x00[a-z]{0,3}){0,3}", root).prop_map(|(table, strings, root)| {
        let mut out = vec![0x03, 0x01, 0x6A];
        if table {
            mb_u32(&mut out, strings.len() as u32);
            out.extend_from_slice(strings.as_bytes());
        } else {
            out.push(0x00);
        }
        out.extend(root);
        out
    })
}

fn arb_tight_limits() -> impl Strategy<Value = Limits> {
    (0usize..10, 0usize..40, 0usize..32, 0usize..64, 0usize..160).prop_map(
        |(max_depth, max_elements, max_string_len, max_string_table_len, max_content_len)| Limits {
            max_depth,
            max_elements,
            max_string_len,
            max_string_table_len,
            max_content_len,
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn generated_trees_are_normalised_and_at_most_8_deep(tree in arb_tree(Form::Wbxml)) {
        prop_assert!(is_normalised(&tree));
        prop_assert!(depth(&tree) <= 8, "depth {}", depth(&tree));
    }

    #[test]
    fn decode_inverts_encode(tree in arb_tree(Form::Wbxml)) {
        let bytes = wbxml::encode(&tree);
        prop_assert_eq!(&bytes[..4], &[0x03, 0x01, 0x6A, 0x00]);
        prop_assert_eq!(wbxml::decode(&bytes), Ok(tree));
    }

    #[test]
    fn decode_reads_string_table_references(tree in arb_tree(Form::Wbxml)) {
        prop_assert_eq!(wbxml::decode(&encode_with_string_table(&tree)), Ok(tree));
    }

    #[test]
    fn from_xml_inverts_to_xml(tree in arb_tree(Form::Xml)) {
        let xml = wbxml::to_xml(&tree);
        match wbxml::from_xml(&xml) {
            Ok(back) => prop_assert_eq!(back, tree, "{}", xml),
            Err(e) => prop_assert!(false, "{e}\n{xml}"),
        }
    }

    #[test]
    fn the_text_form_of_any_tree_reads_back_without_panicking(tree in arb_tree(Form::Wbxml)) {
        // Outside the guarantees above the text form may lose detail, but never fails to parse.
        let xml = wbxml::to_xml(&tree);
        let back = wbxml::from_xml(&xml);
        prop_assert!(back.is_ok(), "{:?}\n{}", back.err(), xml);
    }

    #[test]
    fn decode_of_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        check_decoded(&bytes, &Limits::default())?;
    }

    #[test]
    fn decode_of_arbitrary_bodies_never_panics(body in proptest::collection::vec(any::<u8>(), 0..256)) {
        // Past a valid header, so the body parser sees the bytes.
        let bytes = [&[0x03, 0x01, 0x6A, 0x00][..], &body].concat();
        check_decoded(&bytes, &Limits::default())?;
    }

    #[test]
    fn decode_of_token_soup_never_panics(bytes in arb_token_soup()) {
        check_decoded(&bytes, &Limits::default())?;
    }

    #[test]
    fn decode_of_token_soup_respects_tight_limits(bytes in arb_token_soup(), limits in arb_tight_limits()) {
        check_decoded(&bytes, &limits)?;
    }

    #[test]
    fn decode_of_mutated_encodings_never_panics(
        tree in arb_tree(Form::Wbxml),
        table in any::<bool>(),
        mutations in proptest::collection::vec(arb_mutation(), 1..4),
    ) {
        let bytes = if table { encode_with_string_table(&tree) } else { wbxml::encode(&tree) };
        check_decoded(&mutate(bytes, &mutations), &Limits::default())?;
    }

    #[test]
    fn tight_limits_accept_exactly_the_trees_within_them(tree in arb_tree(Form::Wbxml), limits in arb_tight_limits()) {
        let (total, longest_opaque) = content(&tree);
        let fits = depth(&tree) <= limits.max_depth
            && tree.element_count() <= limits.max_elements
            && longest_opaque.max(longest_text(&tree)) <= limits.max_string_len
            && total <= limits.max_content_len;
        match wbxml::decode_with(&wbxml::encode(&tree), &limits) {
            Ok(decoded) => {
                assert_within(&decoded, &limits)?;
                prop_assert!(fits, "accepted a tree outside {limits:?}");
                prop_assert_eq!(decoded, tree);
            }
            Err(e) => {
                prop_assert!(!fits, "refused a tree within {limits:?}: {e}");
                prop_assert!(
                    matches!(e, DecodeError::TooDeep(_) | DecodeError::TooManyElements(_) | DecodeError::StringTooLong(_) | DecodeError::ContentTooLong(_)),
                    "{e}"
                );
            }
        }
    }

    #[test]
    fn tight_limits_hold_for_mutated_and_string_table_encodings(
        tree in arb_tree(Form::Wbxml),
        limits in arb_tight_limits(),
        table in any::<bool>(),
        mutations in proptest::collection::vec(arb_mutation(), 0..3),
    ) {
        let bytes = if table { encode_with_string_table(&tree) } else { wbxml::encode(&tree) };
        if let Ok(decoded) = wbxml::decode_with(&mutate(bytes, &mutations), &limits) {
            assert_within(&decoded, &limits)?;
        }
    }
}

/// A string-table reference is two bytes but may stand for the whole table; a document made of
/// them must be refused by the content budget, not expanded.
#[test]
fn string_table_references_cannot_inflate_a_document() {
    let mut table = vec![b'A'; 60_000];
    table.push(0);
    let mut doc = vec![0x03, 0x01, 0x6A];
    mb_u32(&mut doc, table.len() as u32);
    doc.extend_from_slice(&table);
    doc.push(0x45);
    for _ in 0..100_000 {
        doc.extend_from_slice(&[0x83, 0x00]);
    }
    doc.push(0x01);
    // 260 kB that would decode to 6 GB of text.
    let limits = Limits::for_body_limit(doc.len());
    assert_eq!(wbxml::decode_with(&doc, &limits), Err(DecodeError::ContentTooLong(2 * doc.len())));
}

#[test]
fn an_opaque_block_reads_back_from_its_base64() {
    // The one opaque case of the text form, spelled out.
    let tree = Element::opaque(wbxml::tag::compose_mail::MIME, b"\0\x01\xFFMIME".to_vec());
    let xml = wbxml::to_xml(&tree);
    let b64 = base64::engine::general_purpose::STANDARD.encode(b"\0\x01\xFFMIME");
    assert!(xml.contains(&format!("opaque=\"base64\">{b64}<")), "{xml}");
    assert_eq!(wbxml::from_xml(&xml).unwrap(), tree);
}
