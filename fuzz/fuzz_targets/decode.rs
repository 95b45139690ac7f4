//! Decodes arbitrary bytes as ActiveSync WBXML. Decoding must never panic; whatever it accepts
//! must survive re-encoding unchanged, and its XML text form must read back without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pushsync::wbxml::{self, Limits};

fuzz_target!(|data: &[u8]| {
    // Tight limits, so the fuzzer also explores the limit checks rather than only deep inputs.
    let tight = Limits { max_depth: 8, max_elements: 64, max_string_len: 256, max_string_table_len: 256, max_content_len: 1024 };
    if let Ok(tree) = wbxml::decode_with(data, &tight) {
        assert!(tree.element_count() <= tight.max_elements);
    }

    let Ok(tree) = wbxml::decode(data) else {
        return;
    };
    let encoded = wbxml::encode(&tree);
    assert_eq!(wbxml::decode(&encoded).as_ref(), Ok(&tree), "decode(encode(tree)) != tree");
    // The text form is not lossless for every tree (see tests/wbxml_properties.rs), but reading
    // it back must not panic.
    let _ = wbxml::from_xml(&wbxml::to_xml(&tree));
});
