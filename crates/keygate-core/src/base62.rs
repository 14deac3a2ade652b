//! Base62 (`0-9A-Za-z`): the alphabet of key bodies and checksums. It has no punctuation, so a
//! key survives double-click selection, URLs and shell quoting unchanged.

pub const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Writes `value` as exactly `width` base62 digits, most significant first, zero-padded.
/// The caller picks a width wide enough for the value (6 digits hold any `u32`).
pub fn encode_fixed(mut value: u64, width: usize, out: &mut String) {
    let mut digits = [0u8; 11]; // 62^11 > u64::MAX
    let width = width.min(digits.len());
    for slot in digits[..width].iter_mut().rev() {
        *slot = ALPHABET[(value % 62) as usize];
        value /= 62;
    }
    out.extend(digits[..width].iter().map(|&b| b as char));
}

/// Reads base62 digits back into a number; `None` for a character outside the alphabet or an
/// overflow.
pub fn decode(digits: &str) -> Option<u64> {
    digits.bytes().try_fold(0u64, |acc, b| {
        let d = digit_value(b)? as u64;
        acc.checked_mul(62)?.checked_add(d)
    })
}

/// `Some(())` when every byte is a base62 digit, whatever the length.
pub fn decode_all_valid(digits: &str) -> Option<()> {
    digits
        .bytes()
        .all(|b| digit_value(b).is_some())
        .then_some(())
}

pub fn digit_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'Z' => Some(b - b'A' + 10),
        b'a'..=b'z' => Some(b - b'a' + 36),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_width_round_trips_every_u32_edge() {
        for v in [0u64, 1, 61, 62, 3843, u32::MAX as u64] {
            let mut s = String::new();
            encode_fixed(v, 6, &mut s);
            assert_eq!(s.len(), 6);
            assert_eq!(decode(&s), Some(v));
        }
    }

    #[test]
    fn characters_outside_the_alphabet_are_refused() {
        assert_eq!(decode("ab-c"), None);
        assert_eq!(decode("é"), None);
    }
}
