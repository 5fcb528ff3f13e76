//! Percent-encoding, as URL query values and gRPC's `grpc-message` use it.

/// Encodes every byte outside the unreserved set (`A-Z a-z 0-9 - _ . ~`) as `%XX`.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Decodes `%XX` escapes; a `%` not followed by two hex digits is kept as it is, and bytes
/// that do not form UTF-8 are replaced (the input comes from a peer and must never panic).
pub fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(hi), Some(lo)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_survives_what_is_not_an_escape() {
        let text = "SELECT 1 FORMAT JSON; é/ü?";
        assert_eq!(decode(&encode(text)), text);
        assert_eq!(encode("a b"), "a%20b");
        assert_eq!(decode("100%25 done%2"), "100% done%2");
        // A `%` before a multi-byte character is not an escape (and must not split it).
        assert_eq!(decode("%aé%"), "%aé%");
    }
}
