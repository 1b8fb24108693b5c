//! Screenshots as WebDriver hands them over: base64 text to decode, and a PNG
//! whose header says how large it is, so a saved screenshot is known to be a
//! real image of the expected size.

/// Decodes standard base64 (`A–Z a–z 0–9 + /`, `=` padding; whitespace is
/// ignored).
pub fn decode_base64(text: &str) -> Result<Vec<u8>, String> {
    let value = |symbol: u8| -> Result<u32, String> {
        Ok(match symbol {
            b'A'..=b'Z' => symbol - b'A',
            b'a'..=b'z' => symbol - b'a' + 26,
            b'0'..=b'9' => symbol - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            other => return Err(format!("{:?} is not a base64 symbol", other as char)),
        }
        .into())
    };
    let symbols: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    let data = symbols
        .strip_suffix(b"==")
        .or_else(|| symbols.strip_suffix(b"="))
        .unwrap_or(&symbols);
    if !symbols.len().is_multiple_of(4) {
        return Err(format!(
            "base64 length {} is not a multiple of 4",
            symbols.len()
        ));
    }
    let mut bytes = Vec::with_capacity(data.len() * 3 / 4);
    for group in data.chunks(4) {
        let mut bits = 0u32;
        for (i, symbol) in group.iter().enumerate() {
            bits |= value(*symbol)? << (18 - 6 * i);
        }
        let [_, first, second, third] = bits.to_be_bytes();
        bytes.extend_from_slice(&[first, second, third][..group.len() - 1]);
    }
    Ok(bytes)
}

/// The width and height in a PNG's header; an error if `bytes` is not a PNG.
pub fn dimensions(bytes: &[u8]) -> Result<(u32, u32), String> {
    const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
    if !bytes.starts_with(SIGNATURE) || bytes.get(12..16) != Some(b"IHDR".as_slice()) {
        return Err("not a PNG image".to_string());
    }
    let number = |at: usize| {
        bytes
            .get(at..at + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or("the PNG header is cut short")
    };
    Ok((number(16)?, number(20)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use awd::watchdog::TestLimit;

    #[test]
    fn base64_decodes_with_and_without_padding() {
        let _limit = TestLimit::seconds(5);
        assert_eq!(decode_base64("TWFu").unwrap(), b"Man");
        assert_eq!(decode_base64("TWE=").unwrap(), b"Ma");
        assert_eq!(decode_base64("TQ==").unwrap(), b"M");
        assert_eq!(decode_base64("aGVs\nbG8/Pz8+").unwrap(), b"hello???>");
        assert!(decode_base64("TWF").is_err());
        assert!(decode_base64("TW!u").is_err());
    }

    #[test]
    fn png_dimensions_come_from_the_header() {
        let _limit = TestLimit::seconds(5);
        // The start of a 1280×900 PNG: signature, IHDR length and type, size.
        let header = decode_base64("iVBORw0KGgoAAAANSUhEUgAABQAAAAOECAYAAA==").unwrap();
        assert_eq!(dimensions(&header), Ok((1280, 900)));
        assert!(dimensions(b"GIF89a").is_err());
        assert!(dimensions(&header[..18]).is_err());
    }
}
