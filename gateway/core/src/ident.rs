//! Chinese identifier checks: 统一社会信用代码 (GB 32100-2015), 组织机构代码 (GB 11714) and
//! 居民身份证号码 (GB 11643-1999).

use time::{Date, Month};

/// The 31 characters a USCC may use, in value order (no I, O, S, V, Z).
const USCC_ALPHABET: &[u8; 31] = b"0123456789ABCDEFGHJKLMNPQRTUWXY";
/// 3^(i-1) mod 31 for positions 1..=17.
const USCC_WEIGHTS: [u32; 17] = [1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28];

/// Why an identifier failed its check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentError {
    /// Wrong length or a character outside the allowed set.
    Format,
    /// Well formed, but the check character does not match.
    CheckChar,
    /// 居民身份证号: the embedded birth date is not a real date.
    BirthDate,
}

/// Trims, folds full-width ASCII (ＡＢＣ１２３) to half-width and upper-cases.
pub fn normalize_code(raw: &str) -> String {
    raw.trim()
        .chars()
        .filter(|c| *c != '\u{3000}')
        .map(|c| match c {
            '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
            _ => c,
        })
        .collect::<String>()
        .to_ascii_uppercase()
}

/// Printable ASCII without spaces or lower case, which [`normalize_code`] leaves as it is: most
/// codes arrive this way, and then nothing needs to be copied. (`false` does not mean that
/// normalising changes it: `"张三"` stays as it is too.)
pub fn is_normal_code(raw: &str) -> bool {
    raw.bytes().all(|b| b.is_ascii_graphic() && !b.is_ascii_lowercase())
}

fn uscc_value(c: u8) -> Option<u32> {
    USCC_ALPHABET.iter().position(|&a| a == c).map(|p| p as u32)
}

/// The check character for the first 17 characters of a USCC, if they are well formed.
pub fn uscc_check_char(first17: &str) -> Option<char> {
    let b = first17.as_bytes();
    if b.len() != 17 {
        return None;
    }
    let mut sum = 0;
    for (&c, w) in b.iter().zip(USCC_WEIGHTS) {
        sum += uscc_value(c)? * w;
    }
    Some(USCC_ALPHABET[((31 - sum % 31) % 31) as usize] as char)
}

/// Checks an already normalised USCC (18 characters).
pub fn check_uscc(code: &str) -> Result<(), IdentError> {
    let b = code.as_bytes();
    let well_formed =
        b.len() == 18 && b[2..8].iter().all(u8::is_ascii_digit) && b.iter().all(|&c| uscc_value(c).is_some());
    if !well_formed {
        return Err(IdentError::Format);
    }
    let sum: u32 = b[..17].iter().zip(USCC_WEIGHTS).map(|(&c, w)| uscc_value(c).unwrap_or(0) * w).sum();
    let expected = USCC_ALPHABET[((31 - sum % 31) % 31) as usize];
    if b[17] == expected { Ok(()) } else { Err(IdentError::CheckChar) }
}

/// Checks a 9-character 组织机构代码 (hyphen already removed).
pub fn check_org_code(code: &str) -> Result<(), IdentError> {
    const WEIGHTS: [u32; 8] = [3, 7, 9, 10, 5, 8, 4, 2];
    let b = code.as_bytes();
    let body_ok = b.len() == 9 && b[..8].iter().all(|c| c.is_ascii_digit() || c.is_ascii_uppercase());
    if !body_ok || !(b[8].is_ascii_digit() || b[8] == b'X') {
        return Err(IdentError::Format);
    }
    let value = |c: u8| if c.is_ascii_digit() { (c - b'0') as u32 } else { (c - b'A') as u32 + 10 };
    let sum: u32 = b[..8].iter().zip(WEIGHTS).map(|(&c, w)| value(c) * w).sum();
    let expected = match 11 - sum % 11 {
        10 => b'X',
        11 => b'0',
        d => b'0' + d as u8,
    };
    if b[8] == expected { Ok(()) } else { Err(IdentError::CheckChar) }
}

/// Checks a 居民身份证号码: 18 characters with check character and a real birth date, or a
/// legacy 15-digit number (no check character; birth year 19YY).
pub fn check_resident_id(id: &str) -> Result<(), IdentError> {
    const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    const CHECK: &[u8; 11] = b"10X98765432";
    let b = id.as_bytes();
    match b.len() {
        18 if b[..17].iter().all(u8::is_ascii_digit) && (b[17].is_ascii_digit() || b[17] == b'X') => {
            birth_date(&id[6..14])?;
            let sum: u32 = b[..17].iter().zip(WEIGHTS).map(|(&c, w)| (c - b'0') as u32 * w).sum();
            if b[17] == CHECK[(sum % 11) as usize] { Ok(()) } else { Err(IdentError::CheckChar) }
        }
        15 if b.iter().all(u8::is_ascii_digit) => birth_date(&format!("19{}", &id[6..12])).map(drop),
        _ => Err(IdentError::Format),
    }
}

fn birth_date(yyyymmdd: &str) -> Result<Date, IdentError> {
    let n = |r: std::ops::Range<usize>| yyyymmdd[r].parse::<u32>().map_err(|_| IdentError::BirthDate);
    let month = Month::try_from(n(4..6)? as u8).map_err(|_| IdentError::BirthDate)?;
    let year = n(0..4)? as i32;
    if year < 1800 {
        return Err(IdentError::BirthDate);
    }
    Date::from_calendar_date(year, month, n(6..8)? as u8).map_err(|_| IdentError::BirthDate)
}

/// Shows only the first six and last four characters of an identity number: for logs and
/// query answers, where the full number must never appear.
pub fn mask_id_number(id: &str) -> String {
    let chars: Vec<char> = id.chars().collect();
    if chars.len() <= 10 {
        return "*".repeat(chars.len());
    }
    let head: String = chars[..6].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}{}{tail}", "*".repeat(chars.len() - 10))
}

/// Masks every identity number in free text (a request path, a query, an audit detail),
/// erring towards masking: percent-escapes are decoded first, then each run of 18 letters and
/// digits that is 17 digits and a digit or `X`/`x` with a plausible birth date (whether or not
/// its check character is right: a mistyped number is still someone's), and each run of 15
/// digits (the old card), keeps only its first six and last four characters.
pub fn mask_id_numbers_in_text(text: &str) -> String {
    let text = percent_decoded(text);
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if looks_like_id_number(run) {
            out.push_str(&mask_id_number(run));
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

fn looks_like_id_number(run: &str) -> bool {
    let b = run.as_bytes();
    match b.len() {
        15 => b.iter().all(u8::is_ascii_digit),
        18 => {
            b[..17].iter().all(u8::is_ascii_digit)
                && (b[17].is_ascii_digit() || b[17] == b'X' || b[17] == b'x')
                && birth_date(&run[6..14]).is_ok()
        }
        _ => false,
    }
}

/// `%XX` escapes decoded (invalid UTF-8 replaced), so that an escaped character cannot hide
/// the digits around it.
fn percent_decoded(text: &str) -> String {
    if !text.contains('%') {
        return text.to_owned();
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_numbers_in_text_are_masked() {
        let text = "/api/v1/records?party=11010519491231002X&uscc=91440300708461136T&old=110105491231002";
        assert_eq!(
            mask_id_numbers_in_text(text),
            "/api/v1/records?party=110105********002X&uscc=91440300708461136T&old=110105*****1002"
        );
        assert_eq!(mask_id_numbers_in_text("无证件号"), "无证件号");
        // Lower-case x, a wrong check character, a percent-escape right before the number.
        assert_eq!(mask_id_numbers_in_text("/e/11010519491231002x"), "/e/110105********002x");
        assert_eq!(mask_id_numbers_in_text("id=110105194912310021"), "id=110105********0021");
        assert_eq!(mask_id_numbers_in_text("q=%E5%BC%A011010519491231002X"), "q=张110105********002X");
    }

    #[test]
    fn uscc_vectors_from_domain_md() {
        for ok in [
            "914403001922038216",
            "91440300708461136T",
            "9144030071526726XG",
            "91110108551385082Q",
            "91330100799655058B",
            "91230500MA1B3N1N2M",
            "11230500001755309F",
            "91350100M000100Y43",
        ] {
            assert_eq!(check_uscc(ok), Ok(()), "{ok}");
        }
        assert_eq!(check_uscc("914403001922038217"), Err(IdentError::CheckChar));
        assert_eq!(check_uscc("914403001922038210"), Err(IdentError::CheckChar));
        assert_eq!(check_uscc("91440300192203821I"), Err(IdentError::Format));
        assert_eq!(check_uscc("9144030019220382O6"), Err(IdentError::Format));
        assert_eq!(check_uscc("91440300192203821"), Err(IdentError::Format));
        assert_eq!(check_uscc("91A40300192203821X"), Err(IdentError::Format));
    }

    #[test]
    fn full_width_and_lower_case_are_normalised() {
        assert_eq!(normalize_code(" ９１４４０３００１９２２０３８２１６ "), "914403001922038216");
        assert_eq!(normalize_code("9144030071526726xg"), "9144030071526726XG");
        // The fast path agrees with normalisation: a code it passes is left as it is.
        for raw in ["914403001922038216", "9144030071526726XG", "A-1", ""] {
            assert!(is_normal_code(raw), "{raw:?}");
            assert_eq!(normalize_code(raw), raw);
        }
        for raw in ["9144030071526726xg", " 91440300", "９１", "91\u{3000}", "x y", "张三"] {
            assert!(!is_normal_code(raw), "{raw:?}");
        }
    }

    #[test]
    fn org_code_vectors() {
        assert_eq!(check_org_code("192203821"), Ok(()));
        assert_eq!(check_org_code("71526726X"), Ok(()));
        assert_eq!(check_org_code("192203822"), Err(IdentError::CheckChar));
        assert_eq!(check_org_code("1922038"), Err(IdentError::Format));
    }

    #[test]
    fn resident_id_vectors() {
        assert_eq!(check_resident_id("11010519491231002X"), Ok(()));
        assert_eq!(check_resident_id("110105194912310021"), Err(IdentError::CheckChar));
        assert_eq!(check_resident_id("110105194902300029"), Err(IdentError::BirthDate));
        assert_eq!(check_resident_id("11010519491231002"), Err(IdentError::Format));
        assert_eq!(check_resident_id("110105491231002"), Ok(()));
        assert_eq!(check_resident_id("110105491331002"), Err(IdentError::BirthDate));
    }

    #[test]
    fn masking_keeps_no_middle_digits() {
        assert_eq!(mask_id_number("11010519491231002X"), "110105********002X");
    }
}
