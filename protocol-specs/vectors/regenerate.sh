#!/bin/sh
# Regenerates the WBXML half of the known-answer vectors in this directory.
#
# Each vector NAME is a pair: NAME.xml, written by hand in the readable form the codec prints
# (`pushsync wbxml decode`: every element prefixed by its code page, opaque data as
# opaque="base64"), and NAME.wbxml, produced by an independent encoder so that the codec is
# checked against something other than itself:
#
#   * Vectors libwbxml can express are converted to libwbxml's XML form (a DOCTYPE, default
#     namespaces such as <Sync xmlns="AirSync:">, libwbxml's spellings of the tags it names
#     differently, "Gal:" for the GAL page, base64 text for the elements libwbxml treats as
#     binary) and encoded with `xml2wbxml -a -n` (compact header 03 01 6A 00, no string table).
#     The libwbxml names and missing tags are read from the comments of ../codepages.toml.
#   * Vectors listed under "Our-encoder only" in README.md (tags libwbxml 0.11.8 does not
#     know, or opaque data outside libwbxml's binary elements) are encoded by pushsync itself
#     (`cargo run -- wbxml encode NAME.xml`).
#
# Usage: protocol-specs/vectors/regenerate.sh [NAME ...]     (default: every vector)
# Needs python3 (3.8+) and xml2wbxml (Debian/Ubuntu package libwbxml2-utils); run it from
# anywhere inside the repository. Afterwards run `cargo test --test wbxml_vectors`, which
# re-checks every vector, and against libwbxml when it is installed.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

command -v xml2wbxml >/dev/null 2>&1 || {
    echo "regenerate.sh: xml2wbxml not found (install libwbxml2-utils)" >&2
    exit 1
}

exec python3 - "$here" "$repo" "$@" <<'PY'
import base64, os, re, subprocess, sys, tempfile
import xml.etree.ElementTree as ET

here, repo, wanted = sys.argv[1], sys.argv[2], sys.argv[3:]

# --- What libwbxml 0.11.8 knows, from the comments of codepages.toml -----------------------
pages = {}        # xmlns -> page name
lib_ns = {}       # page name -> libwbxml namespace, or None when libwbxml lacks the page
lib_name = {}     # (page, tag) -> libwbxml's name for the tag
missing = set()   # (page, tag) libwbxml cannot encode
pending_ns, page = None, None
with open(os.path.join(repo, "protocol-specs", "codepages.toml"), encoding="utf-8") as f:
    for line in f:
        m = re.match(r'# libwbxml 0\.11\.8 namespace: (?:"([^"]*)"|none)', line)
        if m:
            pending_ns = m.group(1)
            continue
        m = re.match(r'name = "([^"]+)"', line)
        if m:
            page = m.group(1)
            lib_ns[page] = pending_ns
            continue
        m = re.match(r'xmlns = "([^"]+)"', line)
        if m:
            pages[m.group(1)] = page
            continue
        m = re.search(r'\{ token = 0x[0-9A-Fa-f]+, name = "([^"]+)" \}(.*)', line)
        if m:
            tag, comment = m.group(1), m.group(2)
            n = re.search(r'names this token "([^"]+)"', comment)
            if n:
                lib_name[(page, tag)] = n.group(1)
            if "lacks this tag" in comment or lib_ns[page] is None:
                missing.add((page, tag))

# Elements whose content libwbxml writes as base64 and reads back from base64 into OPAQUE.
BINARY = {("ResolveRecipients", "Data"), ("Search", "ConversationId"), ("GAL", "Data"),
          ("AirSyncBase", "Content"), ("ItemOperations", "ConversationId"),
          ("ComposeMail", "Mime"), ("Email2", "ConversationId"), ("Email2", "ConversationIndex")}

# --- The "Our-encoder only" list of README.md ----------------------------------------------
ours_only, section = set(), False
with open(os.path.join(here, "README.md"), encoding="utf-8") as f:
    for line in f:
        if line.startswith("## "):
            section = line.strip().lower() == "## our-encoder only"
        elif section:
            m = re.match(r"- `([^`]+)`", line)
            if m:
                ours_only.add(m.group(1))

def split(tag):
    uri, local = tag[1:].split("}")
    return pages[uri], local

def problems(el, out):
    page, tag = split(el.tag)
    if (page, tag) in missing:
        out.append(f"{page}:{tag} is unknown to libwbxml")
    opaque = el.get("opaque") == "base64"
    if opaque and (page, tag) not in BINARY:
        out.append(f"{page}:{tag} holds opaque data libwbxml cannot express")
    if (page, tag) in BINARY and len(el) == 0 and (el.text or "") and not opaque:
        out.append(f"{page}:{tag} holds text, which libwbxml would encode as opaque")
    if len(el) and (el.text or "").strip():
        out.append(f"{page}:{tag} has mixed content")
    if len(el) == 0 and el.text and el.text != el.text.strip():
        out.append(f"{page}:{tag} has text with leading or trailing white space, which libwbxml trims")
    for child in el:
        problems(child, out)

def escape(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

def lib_form(el, parent_page, out):
    page, tag = split(el.tag)
    name = lib_name.get((page, tag), tag)
    ns = f' xmlns="{lib_ns[page]}"' if page != parent_page else ""
    if len(el):
        out.append(f"<{name}{ns}>")
        for child in el:
            lib_form(child, page, out)
        out.append(f"</{name}>")
    elif el.text:
        out.append(f"<{name}{ns}>{escape(el.text)}</{name}>")
    else:
        out.append(f"<{name}{ns}/>")

names = sorted(n[:-4] for n in os.listdir(here) if n.endswith(".xml"))
if wanted:
    unknown = set(wanted) - set(names)
    if unknown:
        sys.exit(f"regenerate.sh: no such vector: {', '.join(sorted(unknown))}")
    names = [n for n in names if n in wanted]

failed = False
for name in names:
    src = os.path.join(here, name + ".xml")
    dst = os.path.join(here, name + ".wbxml")
    root = ET.parse(src).getroot()
    found = []
    problems(root, found)
    if name in ours_only:
        if not found:
            print(f"{name}: listed as our-encoder only, but libwbxml can express it", file=sys.stderr)
            failed = True
            continue
        with open(dst, "wb") as out:
            subprocess.run(["cargo", "run", "--quiet", "--bin", "pushsync", "--", "wbxml", "encode", src],
                           cwd=repo, stdout=out, check=True)
        print(f"{name}: our encoder ({found[0]})")
        continue
    if found:
        print(f"{name}: {'; '.join(found)}; list it under \"Our-encoder only\" in README.md", file=sys.stderr)
        failed = True
        continue
    body = []
    lib_form(root, None, body)
    doc = ('<?xml version="1.0"?>\n<!DOCTYPE ActiveSync PUBLIC "-//MICROSOFT//DTD ActiveSync//EN" '
           '"http://www.microsoft.com/">\n' + "".join(body) + "\n")
    with tempfile.TemporaryDirectory() as tmp:
        lib_xml = os.path.join(tmp, name + ".xml")
        with open(lib_xml, "w", encoding="utf-8") as f:
            f.write(doc)
        r = subprocess.run(["xml2wbxml", "-a", "-n", "-o", dst, lib_xml], capture_output=True, text=True)
        if r.returncode != 0:
            print(f"{name}: xml2wbxml failed: {r.stderr.strip() or r.stdout.strip()}", file=sys.stderr)
            failed = True
            continue
    print(f"{name}: libwbxml")
sys.exit(1 if failed else 0)
PY
