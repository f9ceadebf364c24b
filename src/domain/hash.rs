//! SHA-256 digests and their hex rendering: the project's one way to fingerprint certificates
//! and documents. Pure.

use ring::digest;

/// The SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    digest::digest(&digest::SHA256, bytes)
        .as_ref()
        .try_into()
        .expect("SHA-256 is 32 bytes")
}

/// Lowercase hex. By table, not `format!` per byte: every clinical finding's id is rendered
/// here, inside the store's writer.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(2 * bytes.len());
    for &b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

/// The bytes of `N * 2` hex digits (either case); `None` for any other text.
pub fn from_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    from_hex_bytes(text)?.try_into().ok()
}

/// The bytes of an even number of hex digits (either case); `None` for any other text.
pub fn from_hex_bytes(text: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| char::from(c).to_digit(16);
    let text = text.as_bytes();
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.chunks_exact(2)
        .map(|pair| Some((digit(pair[0])? << 4 | digit(pair[1])?) as u8))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_round_trips() {
        let bytes = super::sha256(b"abc");
        assert_eq!(super::from_hex(&super::hex(&bytes)), Some(bytes));
        assert_eq!(super::from_hex::<2>("0aFf"), Some([0x0a, 0xff]));
        assert_eq!(super::from_hex::<2>("0aF"), None);
        assert_eq!(super::from_hex::<2>("0aFg"), None);
        assert_eq!(super::from_hex::<1>("+1"), None);
    }

    #[test]
    fn known_digest() {
        assert_eq!(
            super::hex(&super::sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
