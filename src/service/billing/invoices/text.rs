//! Text for the PDF's base-14 Helvetica fonts: WinAnsi encoding (characters outside it
//! transliterated to ASCII), glyph widths for alignment, wrapping and truncation.
//! Layout coordinates are `f32` points; no amount is ever computed here.

/// Helvetica advance widths (1/1000 em) of ASCII 32..=126, from the standard AFM.
#[rustfmt::skip]
const REGULAR: [u16; 95] = [
    278, 278, 355, 556, 556, 889, 667, 191, 333, 333, 389, 584, 278, 333, 278, 278,
    556, 556, 556, 556, 556, 556, 556, 556, 556, 556, 278, 278, 584, 584, 584, 556,
    1015, 667, 667, 722, 722, 667, 611, 778, 722, 278, 500, 667, 556, 833, 722, 778,
    667, 778, 722, 667, 611, 722, 667, 944, 667, 667, 611, 278, 278, 278, 469, 556,
    333, 556, 556, 500, 556, 556, 278, 556, 556, 222, 222, 500, 222, 833, 556, 556,
    556, 556, 333, 500, 278, 556, 500, 722, 500, 500, 500, 334, 260, 334, 584,
];

/// Helvetica-Bold advance widths of ASCII 32..=126.
#[rustfmt::skip]
const BOLD: [u16; 95] = [
    278, 333, 474, 556, 556, 889, 722, 238, 333, 333, 389, 584, 278, 333, 278, 278,
    556, 556, 556, 556, 556, 556, 556, 556, 556, 556, 333, 333, 584, 584, 584, 611,
    975, 722, 722, 722, 722, 667, 611, 778, 722, 278, 556, 722, 611, 833, 722, 778,
    667, 778, 722, 667, 611, 722, 667, 944, 667, 667, 611, 333, 278, 333, 584, 556,
    333, 556, 611, 556, 611, 556, 333, 611, 611, 278, 278, 556, 278, 889, 611, 611,
    611, 611, 389, 556, 333, 611, 556, 778, 556, 556, 500, 389, 280, 389, 584,
];

/// WinAnsi code points 0x80-0x9F that differ from Latin-1.
const WIN_ANSI_EXTRA: [(char, u8); 27] = [
    ('€', 0x80),
    ('‚', 0x82),
    ('ƒ', 0x83),
    ('„', 0x84),
    ('…', 0x85),
    ('†', 0x86),
    ('‡', 0x87),
    ('ˆ', 0x88),
    ('‰', 0x89),
    ('Š', 0x8A),
    ('‹', 0x8B),
    ('Œ', 0x8C),
    ('Ž', 0x8E),
    ('‘', 0x91),
    ('’', 0x92),
    ('“', 0x93),
    ('”', 0x94),
    ('•', 0x95),
    ('–', 0x96),
    ('—', 0x97),
    ('˜', 0x98),
    ('™', 0x99),
    ('š', 0x9A),
    ('›', 0x9B),
    ('œ', 0x9C),
    ('ž', 0x9E),
    ('Ÿ', 0x9F),
];

/// Encodes text for a WinAnsi font: ASCII and Latin-1 as is, the WinAnsi extras
/// (€, dashes, curly quotes…), anything else transliterated (`deunicode`) or `?`;
/// control characters become spaces.
pub fn encode(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        let code = u32::from(c);
        if c.is_control() {
            out.push(b' ');
        } else if (0x20..0x7F).contains(&code) || (0xA0..=0xFF).contains(&code) {
            out.push(code as u8);
        } else if let Some((_, byte)) = WIN_ANSI_EXTRA.iter().find(|(ch, _)| *ch == c) {
            out.push(*byte);
        } else {
            match deunicode::deunicode_char(c) {
                Some(ascii) if !ascii.is_empty() => out.extend(
                    ascii
                        .bytes()
                        .map(|b| if (0x20..0x7F).contains(&b) { b } else { b'?' }),
                ),
                _ => out.push(b'?'),
            }
        }
    }
    out
}

/// Advance width of one encoded glyph, in 1/1000 em (non-ASCII glyphs: a generous
/// estimate, so wrapped text never runs over its column).
fn glyph(byte: u8, bold: bool) -> u16 {
    let table = if bold { &BOLD } else { &REGULAR };
    match byte {
        0x20..=0x7E => table[usize::from(byte - 0x20)],
        0x85 | 0x89 | 0x8C | 0x97 | 0x99 | 0xC6 => 1000,
        _ => 778,
    }
}

/// Width of encoded text at `size` points.
pub fn width(text: &[u8], size: f32, bold: bool) -> f32 {
    let units: u32 = text.iter().map(|b| u32::from(glyph(*b, bold))).sum();
    units as f32 * size / 1000.0
}

/// Cuts encoded text to `max` points, ending it with "..." when cut.
pub fn truncate(text: &[u8], max: f32, size: f32, bold: bool) -> Vec<u8> {
    if width(text, size, bold) <= max {
        return text.to_vec();
    }
    let budget = max - width(b"...", size, bold);
    let mut out = Vec::new();
    for &b in text {
        out.push(b);
        if width(&out, size, bold) > budget {
            out.pop();
            break;
        }
    }
    out.extend_from_slice(b"...");
    out
}

/// Wraps encoded text into lines of at most `max` points, breaking at spaces and
/// inside words longer than a line.
pub fn wrap(text: &[u8], max: f32, size: f32, bold: bool) -> Vec<Vec<u8>> {
    let mut lines: Vec<Vec<u8>> = Vec::new();
    let mut current: Vec<u8> = Vec::new();
    for word in text.split(|b| *b == b' ').filter(|w| !w.is_empty()) {
        let mut candidate = current.clone();
        if !candidate.is_empty() {
            candidate.push(b' ');
        }
        candidate.extend_from_slice(word);
        if width(&candidate, size, bold) <= max {
            current = candidate;
            continue;
        }
        if !current.is_empty() {
            lines.push(std::mem::take(&mut current));
        }
        for &b in word {
            current.push(b);
            if width(&current, size, bold) > max && current.len() > 1 {
                current.pop();
                lines.push(std::mem::replace(&mut current, vec![b]));
            }
        }
    }
    if !current.is_empty() || lines.is_empty() {
        lines.push(current);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_latin1_and_transliterates_the_rest() {
        assert_eq!(encode("Café – 10€"), b"Caf\xe9 \x96 10\x80".to_vec());
        assert_eq!(encode("Łódź\n東"), b"L\xf3dz Dong ".to_vec());
        assert!(encode("a\u{1F600}b").starts_with(b"a"));
    }

    #[test]
    fn wraps_within_the_width_and_keeps_every_character() {
        let text = encode("Pro plan (monthly) for the period from February to March 2026");
        let lines = wrap(&text, 100.0, 9.0, false);
        assert!(lines.len() > 1);
        assert!(lines.iter().all(|l| width(l, 9.0, false) <= 100.0));
        let joined: Vec<u8> = lines.join(&b' ');
        assert_eq!(joined, text);
        let long = wrap(&[b'W'; 80], 100.0, 9.0, false);
        assert!(long.iter().all(|l| width(l, 9.0, false) <= 100.0));
        assert_eq!(long.iter().map(Vec::len).sum::<usize>(), 80);
    }

    #[test]
    fn truncates_with_an_ellipsis() {
        let cut = truncate(&[b'a'; 200], 50.0, 10.0, true);
        assert!(cut.ends_with(b"..."));
        assert!(width(&cut, 10.0, true) <= 50.0);
        assert_eq!(truncate(b"short", 50.0, 10.0, false), b"short".to_vec());
    }
}
