//! Making text from the network safe in each output: Markdown text, code
//! spans and table cells, XML text and attributes, Graphviz quoted strings;
//! and the small formatting the generators share (UTC times, shortening).
//!
//! Host and service names, topics and docs arrive from any program on the
//! broker, so none of them may break out of the place it is written into.

/// Characters no output may carry: line breaks and tabs become spaces (a
/// doc of two lines reads as one), other controls U+FFFD. So a newline in a
/// name cannot end a table row, start a Markdown block or end a DOT line.
fn clean(c: char) -> char {
    match c {
        '\n' | '\r' | '\t' => ' ',
        c if c.is_control() => char::REPLACEMENT_CHARACTER,
        c => c,
    }
}

/// Inline Markdown text: every character that could open markup is
/// backslash-escaped (CommonMark allows it before any ASCII punctuation), and
/// `<`, `>`, `&` too, so no HTML or entity can be formed.
pub fn md_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars().map(clean) {
        if matches!(
            c,
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '&' | '|' | '~' | '#' | '!' | '$'
        ) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Markdown text inside a table cell: as [`md_text`] (which escapes `|`).
pub fn md_cell(s: &str) -> String {
    md_text(s)
}

/// A Markdown code span holding `s` literally, outside tables: the fence is
/// one backtick longer than the longest run inside, padded when `s` starts or
/// ends with a backtick or a space (CommonMark 6.1).
pub fn md_code(s: &str) -> String {
    if s.is_empty() {
        return "*(empty)*".to_owned();
    }
    let s: String = s.chars().map(clean).collect();
    let longest = s
        .split(|c| c != '`')
        .map(str::len)
        .max()
        .unwrap_or_default();
    let fence = "`".repeat(longest + 1);
    let pad = if s.starts_with(['`', ' ']) || s.ends_with(['`', ' ']) {
        " "
    } else {
        ""
    };
    format!("{fence}{pad}{s}{pad}{fence}")
}

/// A code span inside a table cell: GFM splits cells on `|` before it reads
/// code spans, so the pipe is escaped there too (and renders as `|`).
///
/// A backslash right before a pipe would give `\\|`, which renderers split
/// differently (GitHub keeps the cell whole, others end it at the pipe), and
/// inside a code span the backslash cannot be escaped: such text is written
/// as escaped text instead, where every backslash is doubled and the pipe's
/// escape is never in doubt.
pub fn md_code_cell(s: &str) -> String {
    if s.contains("\\|") {
        return md_text(s);
    }
    md_code(s).replace('|', "\\|")
}

/// XML character data and attribute values (quoted with `"`). Characters
/// XML 1.0 cannot carry at all become U+FFFD.
pub fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars().map(clean) {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\u{FFFE}' | '\u{FFFF}' => out.push(char::REPLACEMENT_CHARACTER),
            c => out.push(c),
        }
    }
    out
}

/// A Graphviz quoted string, quotes included. A backslash is doubled, so a
/// name cannot form one of Graphviz's label escapes (`\N`, `\l`), end the
/// string early (`\"`) or swallow the closing quote (a trailing `\`).
pub fn dot_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars().map(clean) {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `s` cut to at most `max` characters, the last one an ellipsis when cut.
pub fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Unix milliseconds as `YYYY-MM-DD hh:mm:ss UTC`.
pub fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// How long before `now_ms` `then_ms` was, for a person: `12 s ago`, `3 min ago`.
pub fn ago(now_ms: u64, then_ms: u64) -> String {
    let s = now_ms.saturating_sub(then_ms) / 1000;
    match s {
        0..120 => format!("{s} s ago"),
        120..7200 => format!("{} min ago", s / 60),
        7200..172_800 => format!("{} h ago", s / 3600),
        _ => format!("{} days ago", s / 86_400),
    }
}

/// A length of time as people say it: `2 h`, `10 min`, `90 s`.
pub fn duration(ms: u64) -> String {
    let s = ms / 1000;
    if s >= 7200 && s.is_multiple_of(3600) {
        format!("{} h", s / 3600)
    } else if s >= 120 && s.is_multiple_of(60) {
        format!("{} min", s / 60)
    } else {
        format!("{s} s")
    }
}

/// Days since 1970-01-01 to a (year, month, day) in the proleptic Gregorian
/// calendar (Howard Hinnant's `civil_from_days`): a date without a crate.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_text_cannot_open_markup() {
        assert_eq!(md_text("a|b"), "a\\|b");
        assert_eq!(md_text("<script>"), "\\<script\\>");
        assert_eq!(md_text("*x* [l](u) `c`"), "\\*x\\* \\[l\\](u) \\`c\\`");
        assert_eq!(md_text("a\nb\u{7}"), "a b\u{FFFD}");
        assert_eq!(md_text("&amp;"), "\\&amp;");
    }

    #[test]
    fn code_spans_survive_backticks_pipes_and_spaces() {
        assert_eq!(md_code("/a/b"), "`/a/b`");
        assert_eq!(md_code("a`b"), "``a`b``");
        assert_eq!(md_code("`x"), "`` `x ``");
        assert_eq!(md_code(" x"), "`  x `");
        assert_eq!(md_code_cell("a|b"), "`a\\|b`");
        assert_eq!(md_code_cell("a\\|b"), "a\\\\\\|b");
        assert_eq!(md_code(""), "*(empty)*");
    }

    #[test]
    fn xml_escapes_markup_and_drops_what_xml_cannot_hold() {
        assert_eq!(
            xml("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&apos;"
        );
        assert_eq!(xml("a\u{0}b\u{FFFF}"), "a\u{FFFD}b\u{FFFD}");
    }

    #[test]
    fn dot_strings_cannot_end_early_or_form_escapes() {
        assert_eq!(dot_quote("a\"b"), "\"a\\\"b\"");
        assert_eq!(dot_quote("x\\"), "\"x\\\\\"");
        assert_eq!(dot_quote("\\N\n\u{1b}"), "\"\\\\N \u{FFFD}\"");
    }

    #[test]
    fn utc_dates_match_known_instants() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        // 2000-02-29 (a leap day in a century year) and the current era.
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_795_036_469_713), "2026-11-18 21:14:29 UTC");
        assert_eq!(ago(10_000, 4_000), "6 s ago");
        assert_eq!(ago(4_000, 10_000), "0 s ago");
        assert_eq!(ago(600_000, 0), "10 min ago");
    }

    #[test]
    fn shorten_counts_characters_not_bytes() {
        assert_eq!(shorten("°C°C°C", 4), "°C°…");
        assert_eq!(shorten("abc", 3), "abc");
    }
}
