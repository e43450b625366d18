//! Regular expressions as Envoy's RE2 takes them: the syntax it accepts, the
//! Unicode classes it knows, and a bound on the compiled program size.

const MAX_REGEX_LEN: usize = 1024;

/// Accepts only what RE2 (Envoy's `safe_regex` engine) accepts: no
/// look-around or back-references (already absent from this syntax) and no
/// class set operations, which only Rust's syntax has.
pub fn check_re2_regex(pattern: &str) -> Result<(), String> {
    use regex_syntax::ast::{self, Visitor};

    if pattern.is_empty() {
        return Err("must not be empty".into());
    }
    if pattern.len() > MAX_REGEX_LEN {
        return Err(format!("must be at most {MAX_REGEX_LEN} characters"));
    }
    let parsed = ast::parse::Parser::new()
        .parse(pattern)
        .map_err(|e| format!("invalid regular expression: {}", e.kind()))?;

    struct Re2Only;
    impl Visitor for Re2Only {
        type Output = ();
        type Err = String;
        fn finish(self) -> Result<(), String> {
            Ok(())
        }
        fn visit_class_set_item_pre(&mut self, item: &ast::ClassSetItem) -> Result<(), String> {
            match item {
                ast::ClassSetItem::Unicode(class) => re2_unicode_class(class),
                _ => Ok(()),
            }
        }
        fn visit_class_set_binary_op_pre(
            &mut self,
            _op: &ast::ClassSetBinaryOp,
        ) -> Result<(), String> {
            Err("class set operations (&&, --, ~~) are not supported by RE2".into())
        }
        fn visit_pre(&mut self, ast: &ast::Ast) -> Result<(), String> {
            let flags = match ast {
                ast::Ast::Flags(f) => Some(&f.flags),
                ast::Ast::Group(g) => match &g.kind {
                    ast::GroupKind::NonCapturing(flags) => Some(flags),
                    _ => None,
                },
                _ => None,
            };
            for item in flags.map(|f| f.items.as_slice()).unwrap_or_default() {
                if let ast::FlagsItemKind::Flag(
                    ast::Flag::IgnoreWhitespace | ast::Flag::CRLF | ast::Flag::Unicode,
                ) = item.kind
                {
                    return Err("flags x, R and u are not supported by RE2".into());
                }
            }
            if let ast::Ast::ClassUnicode(class) = ast {
                re2_unicode_class(class)?;
            }
            if let ast::Ast::Assertion(a) = ast {
                use ast::AssertionKind::*;
                if !matches!(
                    a.kind,
                    StartLine | EndLine | StartText | EndText | WordBoundary | NotWordBoundary
                ) {
                    return Err("this word boundary assertion is not supported by RE2".into());
                }
            }
            Ok(())
        }
    }
    ast::visit(&parsed, Re2Only)?;
    let size = program_size(&parse_like_re2(pattern)?);
    if size > MAX_RE2_PROGRAM_SIZE {
        return Err(format!(
            "too complex: its RE2 program would have up to {size} instructions, more than \
             Envoy accepts ({MAX_RE2_PROGRAM_SIZE}); simplify it (e.g. fewer repetitions)"
        ));
    }
    Ok(())
}

/// The Unicode classes (`\p{..}`) RE2 knows: general categories and the
/// scripts of the Unicode version Envoy's RE2 carries (found by probing Envoy;
/// Rust's regex syntax also takes binary properties, aliases and newer
/// scripts, which Envoy refuses). Names are case-sensitive in RE2.
pub const RE2_UNICODE_CLASSES: &[&str] = &[
    "Any",
    "C",
    "Cc",
    "Cf",
    "Co",
    "Cs",
    "L",
    "Ll",
    "Lm",
    "Lo",
    "Lt",
    "Lu",
    "M",
    "Mc",
    "Me",
    "Mn",
    "N",
    "Nd",
    "Nl",
    "No",
    "P",
    "Pc",
    "Pd",
    "Pe",
    "Pf",
    "Pi",
    "Po",
    "Ps",
    "S",
    "Sc",
    "Sk",
    "Sm",
    "So",
    "Z",
    "Zl",
    "Zp",
    "Zs",
    "Adlam",
    "Ahom",
    "Anatolian_Hieroglyphs",
    "Arabic",
    "Armenian",
    "Avestan",
    "Balinese",
    "Bamum",
    "Bassa_Vah",
    "Batak",
    "Bengali",
    "Bhaiksuki",
    "Bopomofo",
    "Brahmi",
    "Braille",
    "Buginese",
    "Buhid",
    "Canadian_Aboriginal",
    "Carian",
    "Caucasian_Albanian",
    "Chakma",
    "Cham",
    "Cherokee",
    "Chorasmian",
    "Common",
    "Coptic",
    "Cuneiform",
    "Cypriot",
    "Cypro_Minoan",
    "Cyrillic",
    "Deseret",
    "Devanagari",
    "Dives_Akuru",
    "Dogra",
    "Duployan",
    "Egyptian_Hieroglyphs",
    "Elbasan",
    "Elymaic",
    "Ethiopic",
    "Georgian",
    "Glagolitic",
    "Gothic",
    "Grantha",
    "Greek",
    "Gujarati",
    "Gunjala_Gondi",
    "Gurmukhi",
    "Han",
    "Hangul",
    "Hanifi_Rohingya",
    "Hanunoo",
    "Hatran",
    "Hebrew",
    "Hiragana",
    "Imperial_Aramaic",
    "Inherited",
    "Inscriptional_Pahlavi",
    "Inscriptional_Parthian",
    "Javanese",
    "Kaithi",
    "Kannada",
    "Katakana",
    "Kawi",
    "Kayah_Li",
    "Kharoshthi",
    "Khitan_Small_Script",
    "Khmer",
    "Khojki",
    "Khudawadi",
    "Lao",
    "Latin",
    "Lepcha",
    "Limbu",
    "Linear_A",
    "Linear_B",
    "Lisu",
    "Lycian",
    "Lydian",
    "Mahajani",
    "Makasar",
    "Malayalam",
    "Mandaic",
    "Manichaean",
    "Marchen",
    "Masaram_Gondi",
    "Medefaidrin",
    "Meetei_Mayek",
    "Mende_Kikakui",
    "Meroitic_Cursive",
    "Meroitic_Hieroglyphs",
    "Miao",
    "Modi",
    "Mongolian",
    "Mro",
    "Multani",
    "Myanmar",
    "Nabataean",
    "Nag_Mundari",
    "Nandinagari",
    "New_Tai_Lue",
    "Newa",
    "Nko",
    "Nushu",
    "Nyiakeng_Puachue_Hmong",
    "Ogham",
    "Ol_Chiki",
    "Old_Hungarian",
    "Old_Italic",
    "Old_North_Arabian",
    "Old_Permic",
    "Old_Persian",
    "Old_Sogdian",
    "Old_South_Arabian",
    "Old_Turkic",
    "Old_Uyghur",
    "Oriya",
    "Osage",
    "Osmanya",
    "Pahawh_Hmong",
    "Palmyrene",
    "Pau_Cin_Hau",
    "Phags_Pa",
    "Phoenician",
    "Psalter_Pahlavi",
    "Rejang",
    "Runic",
    "Samaritan",
    "Saurashtra",
    "Sharada",
    "Shavian",
    "Siddham",
    "SignWriting",
    "Sinhala",
    "Sogdian",
    "Sora_Sompeng",
    "Soyombo",
    "Sundanese",
    "Syloti_Nagri",
    "Syriac",
    "Tagalog",
    "Tagbanwa",
    "Tai_Le",
    "Tai_Tham",
    "Tai_Viet",
    "Takri",
    "Tamil",
    "Tangsa",
    "Tangut",
    "Telugu",
    "Thaana",
    "Thai",
    "Tibetan",
    "Tifinagh",
    "Tirhuta",
    "Toto",
    "Ugaritic",
    "Vai",
    "Vithkuqi",
    "Wancho",
    "Warang_Citi",
    "Yezidi",
    "Yi",
    "Zanabazar_Square",
];

/// RE2 takes `\pL` and `\p{Name}` for the names above, nothing else.
fn re2_unicode_class(class: &regex_syntax::ast::ClassUnicode) -> Result<(), String> {
    use regex_syntax::ast::ClassUnicodeKind;
    let name = match &class.kind {
        ClassUnicodeKind::OneLetter(letter) => letter.to_string(),
        ClassUnicodeKind::Named(name) => name.clone(),
        ClassUnicodeKind::NamedValue { .. } => {
            return Err(
                "Unicode classes of the form \\p{name=value} are not supported by RE2".into(),
            );
        }
    };
    if RE2_UNICODE_CLASSES.contains(&name.as_str()) {
        Ok(())
    } else {
        Err(format!(
            "Unicode class {name:?} is not supported by RE2 (general categories such as L or Lu, \
             and script names such as Greek, are; names are case-sensitive)"
        ))
    }
}

/// Envoy rejects regexes whose compiled RE2 program is larger than this
/// (runtime key `re2.max_program_size.error_level`, default 100).
pub const MAX_RE2_PROGRAM_SIZE: usize = 100;
/// Match, fail and the unanchored-search loop RE2 adds to every program.
const RE2_FIXED_INSTRUCTIONS: usize = 4;

/// An upper bound on the instructions RE2 compiles `hir` into: every literal
/// byte, every UTF-8 byte range of a class, repetitions expanded. RE2 then
/// shrinks programs (required prefixes, shared suffixes, factored
/// alternations), so the real size is smaller; checked against Envoy itself
/// in the end-to-end tests.
fn re2_program_size_bound(hir: &regex_syntax::hir::Hir) -> usize {
    use regex_syntax::hir::{Class, HirKind};

    match hir.kind() {
        HirKind::Empty => 1,
        HirKind::Literal(literal) => literal.0.len(),
        HirKind::Class(Class::Unicode(class)) => class_cost(
            class
                .iter()
                .map(|r| (u32::from(r.start()), u32::from(r.end()))),
        ),
        // In byte mode a class reaching 0xFF is a negated class, which RE2
        // (matching UTF-8) reads as "every code point from there on".
        HirKind::Class(Class::Bytes(class)) => class_cost(class.iter().map(|r| {
            let end = if r.end() == 0xFF {
                MAX_CODE_POINT
            } else {
                u32::from(r.end())
            };
            (u32::from(r.start()), end)
        })),
        HirKind::Look(_) => 1,
        HirKind::Capture(capture) => re2_program_size_bound(&capture.sub).saturating_add(2),
        HirKind::Concat(subs) => subs
            .iter()
            .map(re2_program_size_bound)
            .fold(0, usize::saturating_add),
        HirKind::Alternation(subs) => subs
            .iter()
            .map(re2_program_size_bound)
            .fold(subs.len().saturating_sub(1), usize::saturating_add),
        HirKind::Repetition(repetition) => {
            let sub = re2_program_size_bound(&repetition.sub);
            let min = repetition.min as usize;
            match repetition.max {
                // x{n,m}: n copies, then m-n optional copies.
                Some(max) => sub
                    .saturating_mul(min)
                    .saturating_add((max as usize - min).saturating_mul(sub + 1)),
                // x{n,}: n copies (at least one) and a loop.
                None => sub.saturating_mul(min.max(1)).saturating_add(1),
            }
        }
    }
}

const MAX_CODE_POINT: u32 = 0x10_FFFF;
/// Code points above ASCII, surrogates excluded.
const NON_ASCII_SCALARS: u64 = (MAX_CODE_POINT as u64 + 1) - 0x80 - 0x800;
/// What RE2's special case for "any code point above ASCII" costs, with margin.
const ANY_NON_ASCII_COST: usize = 4;

/// One instruction per ASCII range; above ASCII either RE2's compact "any
/// non-ASCII" form or one instruction per node of the UTF-8 byte trie.
fn class_cost(ranges: impl Iterator<Item = (u32, u32)>) -> usize {
    let mut ascii = 0usize;
    let mut non_ascii = Vec::new();
    let mut covered: u64 = 0;
    for (start, end) in ranges {
        if start < 0x80 {
            ascii += 1;
        }
        if end >= 0x80 {
            let start = start.max(0x80);
            let surrogates = u64::from(end.min(0xDFFF))
                .saturating_sub(u64::from(start.max(0xD800)))
                + u64::from(start <= 0xDFFF && end >= 0xD800);
            covered += u64::from(end - start) + 1 - surrogates;
            non_ascii.push((start, end));
        }
    }
    let upper = if non_ascii.is_empty() {
        0
    } else if covered >= NON_ASCII_SCALARS {
        ANY_NON_ASCII_COST
    } else {
        utf8_trie_nodes(&non_ascii)
    };
    ascii + upper + 1
}

fn utf8_trie_nodes(ranges: &[(u32, u32)]) -> usize {
    let mut nodes = std::collections::HashSet::new();
    for &(start, end) in ranges {
        let (Some(start), Some(end)) = (char::from_u32(start), char::from_u32(end)) else {
            continue;
        };
        for sequence in regex_syntax::utf8::Utf8Sequences::new(start, end) {
            let path: Vec<(u8, u8)> = sequence
                .as_slice()
                .iter()
                .map(|r| (r.start, r.end))
                .collect();
            for depth in 1..=path.len() {
                nodes.insert(path[..depth].to_vec());
            }
        }
    }
    nodes.len()
}

/// Parses with RE2's meaning of \d, \w, \s (ASCII); falls back to Unicode
/// mode for constructs that need it (\pL), which only over-estimates.
fn parse_like_re2(pattern: &str) -> Result<regex_syntax::hir::Hir, String> {
    let ascii = regex_syntax::ParserBuilder::new()
        .unicode(false)
        .utf8(false)
        .build()
        .parse(pattern);
    match ascii {
        Ok(hir) => Ok(hir),
        Err(_) => regex_syntax::Parser::new()
            .parse(pattern)
            .map_err(|e| format!("invalid regular expression: {e}")),
    }
}

fn program_size(hir: &regex_syntax::hir::Hir) -> usize {
    re2_program_size_bound(hir).saturating_add(RE2_FIXED_INSTRUCTIONS)
}

/// The bound validation enforces, exposed for calibration against Envoy.
pub fn re2_program_size_estimate(pattern: &str) -> Option<usize> {
    parse_like_re2(pattern).ok().map(|hir| program_size(&hir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regexes_must_be_re2() {
        assert!(check_re2_regex("^/users/[0-9]+$").is_ok());
        assert!(check_re2_regex("/a(b").is_err());
        assert!(check_re2_regex("(?=x)").is_err());
        assert!(check_re2_regex(r"(a)\1").is_err());
        assert!(check_re2_regex("[a-z&&[^aeiou]]").is_err());
        assert!(check_re2_regex("").is_err());
        assert!(check_re2_regex(r"^/\p{Ogham}+[\p{Zl}\p{Zp}]$").is_ok());
        for unknown in [r"\p{ASCII_Hex_Digit}", r"[\p{greek}]", r"\p{Script=Greek}"] {
            let err = check_re2_regex(unknown).unwrap_err();
            assert!(err.contains("not supported by RE2"), "{unknown}: {err}");
        }
        // Envoy NACKs this one (RE2 program size 1503 > 100).
        let err =
            check_re2_regex("^/(alpha|beta|gamma|delta|epsilon|zeta|eta|theta|iota|kappa){1,30}$")
                .unwrap_err();
        assert!(err.contains("too complex"), "{err}");
        assert!(check_re2_regex(r"^/api/v1/customers/\d+/invoices/[0-9a-f-]+/lines/\d+$").is_ok());
    }
}
