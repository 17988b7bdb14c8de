//! W3C Trace Context `traceparent` (<https://www.w3.org/TR/trace-context/#traceparent-header>).
//!
//! One parser for the gateway and the services. Version `00` has exactly four fields; a higher
//! version (not `ff`) is parsed by its first four fields and may carry more after a `-`, as the
//! specification asks of a version-00 reader.

/// A parsed `traceparent`: `<version>-<trace-id>-<parent-id>-<flags>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// 128-bit trace id, never zero.
    pub trace_id: u128,
    /// 64-bit id of the caller's span, never zero.
    pub parent_id: u64,
    /// Trace flags (bit 0 = sampled).
    pub flags: u8,
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Writes `v` as `out.len()` lowercase hex digits (the low `4 * out.len()` bits).
///
/// Eight digits at a time from the right ([`hex8`]); a digit at a time only for the last few
/// (a `traceparent` and a request id are 82 digits per request: a nibble-by-nibble loop over a
/// `u128` was ~5 instructions a digit).
#[inline]
pub fn put_hex(out: &mut [u8], mut v: u128) {
    let mut end = out.len();
    while end >= 8 {
        out[end - 8..end].copy_from_slice(&hex8(v as u32));
        v >>= 32;
        end -= 8;
    }
    for b in out[..end].iter_mut().rev() {
        *b = HEX[(v & 0xf) as usize];
        v >>= 4;
    }
}

/// `x` as 8 lowercase hex digits, computed in one `u64` (each nibble spread into its own byte,
/// then `'0'` added, and `'a' - '0' - 10` more where the nibble is 10 or above).
#[inline]
fn hex8(x: u32) -> [u8; 8] {
    let x = u64::from(x);
    let v = ((x & 0xffff_0000) << 16) | (x & 0x0000_ffff);
    let v = ((v & 0x0000_ff00_0000_ff00) << 8) | (v & 0x0000_00ff_0000_00ff);
    let v = ((v & 0x00f0_00f0_00f0_00f0) << 4) | (v & 0x000f_000f_000f_000f);
    // byte k (from the least significant) holds nibble k: big-endian bytes are the digits in order
    let letters = ((v + 0x0606_0606_0606_0606) >> 4) & 0x0101_0101_0101_0101;
    (v + 0x3030_3030_3030_3030 + letters * u64::from(b'a' - b'0' - 10)).to_be_bytes()
}

fn lower_hex(s: &[u8], len: usize) -> bool {
    s.len() == len && s.iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
}

fn hex_value(s: &[u8]) -> u128 {
    s.iter().fold(0u128, |acc, b| {
        let d = if b.is_ascii_digit() { b - b'0' } else { b - b'a' + 10 };
        (acc << 4) | u128::from(d)
    })
}

impl TraceParent {
    /// Parses a header value; `None` when it is not a valid `traceparent` (then a receiver
    /// starts a new trace).
    pub fn parse(value: &[u8]) -> Option<Self> {
        let v = value.trim_ascii();
        // 2 + 1 + 32 + 1 + 16 + 1 + 2 = 55 bytes of fixed layout.
        if v.len() < 55 {
            return None;
        }
        let (version, rest) = (&v[..2], &v[2..]);
        if !lower_hex(version, 2) || version == b"ff" {
            return None;
        }
        if rest[0] != b'-' || rest[33] != b'-' || rest[50] != b'-' {
            return None;
        }
        let (tid, pid, flags) = (&rest[1..33], &rest[34..50], &rest[51..53]);
        if !lower_hex(tid, 32) || !lower_hex(pid, 16) || !lower_hex(flags, 2) {
            return None;
        }
        let tail = &rest[53..];
        match (version, tail.first()) {
            (_, None) => {}
            (b"00", Some(_)) => return None,
            (_, Some(b'-')) => {}
            (_, Some(_)) => return None,
        }
        let trace_id = hex_value(tid);
        let parent_id = hex_value(pid) as u64;
        if trace_id == 0 || parent_id == 0 {
            return None;
        }
        Some(Self { trace_id, parent_id, flags: hex_value(flags) as u8 })
    }

    /// The version-00 header value (always 55 bytes of lowercase hex and dashes).
    pub fn to_bytes(&self) -> [u8; 55] {
        let mut b = *b"00-00000000000000000000000000000000-0000000000000000-00";
        put_hex(&mut b[3..35], self.trace_id);
        put_hex(&mut b[36..52], u128::from(self.parent_id));
        put_hex(&mut b[53..55], u128::from(self.flags));
        b
    }

    /// [`Self::to_bytes`] as a `String`.
    pub fn to_header_string(&self) -> String {
        String::from_utf8_lossy(&self.to_bytes()).into_owned()
    }

    /// The trace id as 32 lowercase hex digits.
    pub fn trace_id_hex(&self) -> String {
        let mut b = [0u8; 32];
        put_hex(&mut b, self.trace_id);
        String::from_utf8_lossy(&b).into_owned()
    }

    /// The parent (caller's span) id as 16 lowercase hex digits.
    pub fn parent_id_hex(&self) -> String {
        let mut b = [0u8; 16];
        put_hex(&mut b, u128::from(self.parent_id));
        String::from_utf8_lossy(&b).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    /// `put_hex` against the digit-by-digit definition, for every length up to 34 digits, on
    /// edge values and a million pseudo-random ones.
    #[test]
    fn put_hex_writes_the_low_digits_in_lowercase() {
        fn reference(out: &mut [u8], mut v: u128) {
            for b in out.iter_mut().rev() {
                *b = HEX[(v & 0xf) as usize];
                v >>= 4;
            }
        }
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            // xorshift64*
            seed ^= seed >> 12;
            seed ^= seed << 25;
            seed ^= seed >> 27;
            seed.wrapping_mul(0x2545_f491_4f6c_dd1d)
        };
        let mut values = vec![0, u128::MAX, 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210, 0xa, 0x9, 0xf0f0_f0f0];
        for _ in 0..1_000_000 {
            values.push((u128::from(next()) << 64) | u128::from(next()));
        }
        for (i, v) in values.into_iter().enumerate() {
            let len = if i < 6 {
                0..=34
            } else {
                let l = i % 35;
                l..=l
            };
            for len in len {
                let (mut got, mut want) = ([b'?'; 34], [b'?'; 34]);
                put_hex(&mut got[..len], v);
                reference(&mut want[..len], v);
                assert_eq!(got, want, "{v:#x} in {len} digits");
            }
        }
        assert_eq!(&hex8(0x09af_10fa), b"09af10fa");
    }

    #[test]
    fn parse_table() {
        let ok =
            Some(TraceParent { trace_id: 0x4bf92f3577b34da6a3ce929d0e0e4736, parent_id: 0x00f067aa0ba902b7, flags: 1 });
        let cases: &[(&str, Option<TraceParent>)] = &[
            (GOOD, ok),
            (&format!("  {GOOD} "), ok),
            // a future version may append fields after a dash
            ("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds", ok),
            ("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", ok),
            // ...but not glued on, and version 00 has exactly four fields
            ("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01xyz", None),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", None),
            ("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", None),
            ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", None),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", None),
            ("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", None),
            ("00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01", None),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1", None),
            ("0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", None),
            ("00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", None),
            ("", None),
            ("garbage", None),
        ];
        for (v, want) in cases {
            assert_eq!(TraceParent::parse(v.as_bytes()), *want, "{v:?}");
        }
    }

    #[test]
    fn format_round_trips() {
        let t = TraceParent::parse(GOOD.as_bytes()).unwrap();
        assert_eq!(t.to_header_string(), GOOD);
        assert_eq!(t.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.parent_id_hex(), "00f067aa0ba902b7");
        // a future version is answered as version 00
        let f = TraceParent::parse(b"cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x").unwrap();
        assert_eq!(f.to_header_string(), GOOD);
    }
}
