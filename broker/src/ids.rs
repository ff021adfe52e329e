//! Random ids: topic ids, the cluster id, group member ids, names of set-aside directories.

/// 16 random bytes from the kernel's generator.
pub fn random_id() -> [u8; 16] {
    let mut id = [0u8; 16];
    let filled = rustix::rand::getrandom(&mut id, rustix::rand::GetRandomFlags::empty());
    if filled.is_err() {
        // No entropy source is a broken host, but these ids only need to be unique here.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        id = nanos.to_le_bytes();
    }
    id
}

/// Java's `String.hashCode`: over UTF-16 code units, wrapping; Kafka places groups and
/// replica fetchers by it.
pub fn java_hash(text: &str) -> i32 {
    text.encode_utf16().fold(0i32, |h, unit| {
        h.wrapping_mul(31).wrapping_add(i32::from(unit))
    })
}

/// Kafka's `Utils.abs`, which maps `i32::MIN` to 0 rather than overflow.
pub fn kafka_abs(n: i32) -> i32 {
    if n == i32::MIN {
        0
    } else {
        n.abs()
    }
}

/// Lower-case hex of 16 bytes.
pub fn hex(bytes: &[u8; 16]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The 16 bytes of 32 hex digits; `None` for anything else.
pub fn unhex(text: &str) -> Option<[u8; 16]> {
    if text.len() != 32 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = u8::from_str_radix(&text[i * 2..i * 2 + 2], 16).ok()?;
    }
    Some(out)
}
