//! HPACK (RFC 7541) for [`LenientAuthority`](super::LenientAuthority):
//! decoding the client's header blocks (tracking its dynamic table) and
//! encoding them again as literals that never touch the server's table.

use std::collections::VecDeque;

use super::{lenient_authority, HEADER_TABLE_SIZE, MAX_DECODED_HEADER_LIST_SIZE, STATIC_AUTHORITY};

/// One dynamic-table entry: `buf` = name ++ value.
pub(super) struct Entry {
    pub(super) buf: Vec<u8>,
    pub(super) name_len: usize,
    /// Static-table index with the same name (0 = none), reused on re-encode.
    static_name: u8,
}

/// Tracks the client encoder's dynamic table for the whole connection.
pub(super) struct HpackDecoder {
    pub(super) table: VecDeque<Entry>,
    /// RFC 7541 §4.1 size of the table.
    pub(super) size: usize,
    max_size: usize,
    /// Buffers of evicted entries, reused for new ones.
    spare: Vec<Vec<u8>>,
    name_scratch: Vec<u8>,
    value_scratch: Vec<u8>,
}

/// A field's name as decoded: a static name index (0 = none) and its bytes.
pub(super) type Name<'a> = (u8, &'a [u8]);

impl HpackDecoder {
    pub(super) fn new() -> Self {
        HpackDecoder {
            table: VecDeque::new(),
            size: 0,
            max_size: HEADER_TABLE_SIZE,
            spare: Vec::new(),
            name_scratch: Vec::new(),
            value_scratch: Vec::new(),
        }
    }

    /// Decodes `src` (a complete header block) and appends its fields to
    /// `dst` as literals without indexing, fixing `:authority`.
    pub(super) fn decode_block(
        &mut self,
        src: &[u8],
        dst: &mut Vec<u8>,
    ) -> Result<(), &'static str> {
        let mut p = 0;
        let mut list_size = 0usize;
        let mut seen_field = false;
        while p < src.len() {
            let b = src[p];
            if b & 0x80 != 0 {
                // Indexed header field.
                let (idx, n) = decode_int(&src[p..], 7)?;
                p += n;
                let ((sn, name), value) = get_entry(&self.table, idx)?;
                list_size = add_list_size(list_size, name, value)?;
                emit(dst, sn, name, value, false);
            } else if b & 0xe0 == 0x20 {
                // Dynamic table size update: only before the first field.
                if seen_field {
                    return Err("HPACK table size update after a header field");
                }
                let (size, n) = decode_int(&src[p..], 5)?;
                p += n;
                if size > HEADER_TABLE_SIZE {
                    return Err("HPACK table size update above SETTINGS_HEADER_TABLE_SIZE");
                }
                self.max_size = size;
                self.evict_to(size);
                continue;
            } else {
                // Literal: 01 = with incremental indexing (6-bit prefix),
                // 0001 = never indexed, 0000 = without indexing (4-bit).
                let indexing = b & 0x40 != 0;
                let never = !indexing && b & 0x10 != 0;
                let (idx, n) = decode_int(&src[p..], if indexing { 6 } else { 4 })?;
                p += n;
                let (sn, name) = if idx == 0 {
                    let (s, n) = decode_str(&src[p..], &mut self.name_scratch)?;
                    p += n;
                    (0, s)
                } else {
                    get_entry(&self.table, idx)?.0
                };
                let (value, n) = decode_str(&src[p..], &mut self.value_scratch)?;
                p += n;
                list_size = add_list_size(list_size, name, value)?;
                emit(dst, sn, name, value, never);
                if indexing {
                    let mut buf = self.spare.pop().unwrap_or_default();
                    buf.clear();
                    buf.extend_from_slice(name);
                    buf.extend_from_slice(value);
                    let name_len = name.len();
                    self.insert(Entry {
                        buf,
                        name_len,
                        static_name: sn,
                    });
                }
            }
            seen_field = true;
        }
        Ok(())
    }

    fn evict_to(&mut self, limit: usize) {
        while self.size > limit {
            match self.table.pop_back() {
                Some(e) => {
                    self.size -= e.buf.len() + 32;
                    if self.spare.len() < 8 {
                        self.spare.push(e.buf);
                    }
                }
                None => {
                    self.size = 0;
                    break;
                }
            }
        }
    }

    fn insert(&mut self, e: Entry) {
        let esize = e.buf.len() + 32;
        if esize > self.max_size {
            // RFC 7541 §4.4: empties the table, entry not added.
            self.evict_to(0);
            if self.spare.len() < 8 {
                self.spare.push(e.buf);
            }
            return;
        }
        self.evict_to(self.max_size - esize);
        self.size += esize;
        self.table.push_front(e);
    }
}

pub(super) fn add_list_size(acc: usize, name: &[u8], value: &[u8]) -> Result<usize, &'static str> {
    let s = acc + name.len() + value.len() + 32;
    if s > MAX_DECODED_HEADER_LIST_SIZE {
        return Err("decoded header list too large");
    }
    Ok(s)
}

/// Looks up a 1-based HPACK index (static table, then dynamic table).
pub(super) fn get_entry(
    table: &VecDeque<Entry>,
    idx: usize,
) -> Result<(Name<'_>, &[u8]), &'static str> {
    if idx == 0 {
        return Err("HPACK index 0");
    }
    if idx <= STATIC_TABLE.len() {
        let (n, v) = STATIC_TABLE[idx - 1];
        return Ok(((idx as u8, n.as_bytes()), v.as_bytes()));
    }
    match table.get(idx - STATIC_TABLE.len() - 1) {
        Some(e) => Ok(((e.static_name, &e.buf[..e.name_len]), &e.buf[e.name_len..])),
        None => Err("HPACK index out of range"),
    }
}

/// Appends one field as a literal without indexing (or never indexed).
pub(super) fn emit(dst: &mut Vec<u8>, static_name: u8, name: &[u8], value: &[u8], never: bool) {
    let mut value = value;
    if static_name == STATIC_AUTHORITY || (static_name == 0 && name == b":authority") {
        if let Some(fixed) = lenient_authority(value) {
            if fixed.is_empty() {
                return; // nothing usable: omit (optional in HTTP/2)
            }
            value = fixed;
        }
    }
    let first = if never { 0x10 } else { 0x00 };
    if static_name != 0 {
        encode_int(dst, first, 4, usize::from(static_name));
    } else {
        dst.push(first);
        encode_int(dst, 0, 7, name.len());
        dst.extend_from_slice(name);
    }
    encode_int(dst, 0, 7, value.len());
    dst.extend_from_slice(value);
}

/// RFC 7541 §5.1 integer with a `prefix`-bit prefix; `first` holds the
/// high bits of the first octet.
pub(super) fn encode_int(dst: &mut Vec<u8>, first: u8, prefix: u8, mut v: usize) {
    let max = (1usize << prefix) - 1;
    if v < max {
        dst.push(first | v as u8);
        return;
    }
    dst.push(first | max as u8);
    v -= max;
    while v >= 128 {
        dst.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    dst.push(v as u8);
}

/// RFC 7541 §5.1 integer; returns (value, octets used). At most four
/// continuation octets (values < 2^28 + prefix max).
pub(super) fn decode_int(src: &[u8], prefix: u8) -> Result<(usize, usize), &'static str> {
    let Some(&b0) = src.first() else {
        return Err("HPACK integer truncated");
    };
    let max = (1usize << prefix) - 1;
    let mut v = usize::from(b0) & max;
    if v < max {
        return Ok((v, 1));
    }
    let mut shift = 0;
    for (i, &b) in src.iter().enumerate().skip(1) {
        v += usize::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok((v, i + 1));
        }
        shift += 7;
        if shift > 21 {
            return Err("HPACK integer too large");
        }
    }
    Err("HPACK integer truncated")
}

/// RFC 7541 §5.2 string literal; Huffman-coded strings are decoded into
/// `scratch`. Returns (bytes, octets used).
pub(super) fn decode_str<'a>(
    src: &'a [u8],
    scratch: &'a mut Vec<u8>,
) -> Result<(&'a [u8], usize), &'static str> {
    let Some(&b0) = src.first() else {
        return Err("HPACK string truncated");
    };
    let (len, n) = decode_int(src, 7)?;
    if len > src.len() - n {
        return Err("HPACK string truncated");
    }
    let raw = &src[n..n + len];
    if b0 & 0x80 == 0 {
        return Ok((raw, n + len));
    }
    scratch.clear();
    huffman_decode(raw, scratch)?;
    Ok((&scratch[..], n + len))
}

/// RFC 7541 Appendix A.
pub(super) const STATIC_TABLE: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

// ---------------------------------------------------------------------------
// Huffman decoding (RFC 7541 §5.2, Appendix B).
// ---------------------------------------------------------------------------

/// Code of the EOS symbol (256): 30 one bits.
pub(super) const EOS_CODE: u32 = 0x3fff_ffff;
pub(super) const EOS_LEN: u8 = 30;

// The code table of RFC 7541 Appendix B (symbols 0..=255; EOS above).
pub(super) const HUFF_CODES: [u32; 256] = [
    0x1ff8, 0x7fffd8, 0xfffffe2, 0xfffffe3, 0xfffffe4, 0xfffffe5, 0xfffffe6, 0xfffffe7, 0xfffffe8,
    0xffffea, 0x3ffffffc, 0xfffffe9, 0xfffffea, 0x3ffffffd, 0xfffffeb, 0xfffffec, 0xfffffed,
    0xfffffee, 0xfffffef, 0xffffff0, 0xffffff1, 0xffffff2, 0x3ffffffe, 0xffffff3, 0xffffff4,
    0xffffff5, 0xffffff6, 0xffffff7, 0xffffff8, 0xffffff9, 0xffffffa, 0xffffffb, 0x14, 0x3f8,
    0x3f9, 0xffa, 0x1ff9, 0x15, 0xf8, 0x7fa, 0x3fa, 0x3fb, 0xf9, 0x7fb, 0xfa, 0x16, 0x17, 0x18,
    0x0, 0x1, 0x2, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f, 0x5c, 0xfb, 0x7ffc, 0x20, 0xffb,
    0x3fc, 0x1ffa, 0x21, 0x5d, 0x5e, 0x5f, 0x60, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68,
    0x69, 0x6a, 0x6b, 0x6c, 0x6d, 0x6e, 0x6f, 0x70, 0x71, 0x72, 0xfc, 0x73, 0xfd, 0x1ffb, 0x7fff0,
    0x1ffc, 0x3ffc, 0x22, 0x7ffd, 0x3, 0x23, 0x4, 0x24, 0x5, 0x25, 0x26, 0x27, 0x6, 0x74, 0x75,
    0x28, 0x29, 0x2a, 0x7, 0x2b, 0x76, 0x2c, 0x8, 0x9, 0x2d, 0x77, 0x78, 0x79, 0x7a, 0x7b, 0x7ffe,
    0x7fc, 0x3ffd, 0x1ffd, 0xffffffc, 0xfffe6, 0x3fffd2, 0xfffe7, 0xfffe8, 0x3fffd3, 0x3fffd4,
    0x3fffd5, 0x7fffd9, 0x3fffd6, 0x7fffda, 0x7fffdb, 0x7fffdc, 0x7fffdd, 0x7fffde, 0xffffeb,
    0x7fffdf, 0xffffec, 0xffffed, 0x3fffd7, 0x7fffe0, 0xffffee, 0x7fffe1, 0x7fffe2, 0x7fffe3,
    0x7fffe4, 0x1fffdc, 0x3fffd8, 0x7fffe5, 0x3fffd9, 0x7fffe6, 0x7fffe7, 0xffffef, 0x3fffda,
    0x1fffdd, 0xfffe9, 0x3fffdb, 0x3fffdc, 0x7fffe8, 0x7fffe9, 0x1fffde, 0x7fffea, 0x3fffdd,
    0x3fffde, 0xfffff0, 0x1fffdf, 0x3fffdf, 0x7fffeb, 0x7fffec, 0x1fffe0, 0x1fffe1, 0x3fffe0,
    0x1fffe2, 0x7fffed, 0x3fffe1, 0x7fffee, 0x7fffef, 0xfffea, 0x3fffe2, 0x3fffe3, 0x3fffe4,
    0x7ffff0, 0x3fffe5, 0x3fffe6, 0x7ffff1, 0x3ffffe0, 0x3ffffe1, 0xfffeb, 0x7fff1, 0x3fffe7,
    0x7ffff2, 0x3fffe8, 0x1ffffec, 0x3ffffe2, 0x3ffffe3, 0x3ffffe4, 0x7ffffde, 0x7ffffdf,
    0x3ffffe5, 0xfffff1, 0x1ffffed, 0x7fff2, 0x1fffe3, 0x3ffffe6, 0x7ffffe0, 0x7ffffe1, 0x3ffffe7,
    0x7ffffe2, 0xfffff2, 0x1fffe4, 0x1fffe5, 0x3ffffe8, 0x3ffffe9, 0xffffffd, 0x7ffffe3, 0x7ffffe4,
    0x7ffffe5, 0xfffec, 0xfffff3, 0xfffed, 0x1fffe6, 0x3fffe9, 0x1fffe7, 0x1fffe8, 0x7ffff3,
    0x3fffea, 0x3fffeb, 0x1ffffee, 0x1ffffef, 0xfffff4, 0xfffff5, 0x3ffffea, 0x7ffff4, 0x3ffffeb,
    0x7ffffe6, 0x3ffffec, 0x3ffffed, 0x7ffffe7, 0x7ffffe8, 0x7ffffe9, 0x7ffffea, 0x7ffffeb,
    0xffffffe, 0x7ffffec, 0x7ffffed, 0x7ffffee, 0x7ffffef, 0x7fffff0, 0x3ffffee,
];

pub(super) const HUFF_LENS: [u8; 256] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28,
    28, 28, 28, 28, 28, 28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5,
    5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, 15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6,
    6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, 20, 22, 20, 20, 22, 22, 22, 23, 22,
    23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, 22,
    21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20,
    22, 22, 22, 23, 22, 22, 23, 26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19,
    21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, 20, 24, 20, 21, 22, 21, 21, 23, 22,
    22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,
];

/// Decoding tables built at compile time from the canonical code: an 8-bit
/// lookup for codes of up to 8 bits (the common characters), and per code
/// length L the smallest code, the number of codes and their offset into
/// `syms` (symbols ordered by (length, code)).
pub(super) struct HuffTables {
    lut8: [(u8, u8); 256],
    first: [u32; 31],
    count: [u16; 31],
    offset: [u16; 31],
    syms: [u16; 257],
}

pub(super) const fn huff_code(s: usize) -> (u32, u8) {
    if s == 256 {
        (EOS_CODE, EOS_LEN)
    } else {
        (HUFF_CODES[s], HUFF_LENS[s])
    }
}

pub(super) const fn build_huffman() -> HuffTables {
    let mut t = HuffTables {
        lut8: [(0, 0); 256],
        first: [u32::MAX; 31],
        count: [0; 31],
        offset: [0; 31],
        syms: [0; 257],
    };
    let mut s = 0;
    while s < 257 {
        let (code, len) = huff_code(s);
        let l = len as usize;
        t.count[l] += 1;
        if code < t.first[l] {
            t.first[l] = code;
        }
        if len <= 8 {
            let shift = 8 - len as usize;
            let base = (code as usize) << shift;
            let mut k = 0;
            while k < (1 << shift) {
                t.lut8[base + k] = (s as u8, len);
                k += 1;
            }
        }
        s += 1;
    }
    let mut l = 0;
    let mut off = 0u16;
    while l <= 30 {
        if t.count[l] == 0 {
            t.first[l] = 0;
        }
        t.offset[l] = off;
        off += t.count[l];
        l += 1;
    }
    s = 0;
    while s < 257 {
        let (code, len) = huff_code(s);
        let l = len as usize;
        // Canonical code: codes of one length are consecutive, so this index
        // is in range and unique (a non-canonical table fails to compile or
        // fails the round-trip test).
        t.syms[t.offset[l] as usize + (code - t.first[l]) as usize] = s as u16;
        s += 1;
    }
    t
}

pub(super) static HUFF: HuffTables = build_huffman();

/// Decodes a Huffman-coded string, appending to `dst`. Rejects EOS inside the
/// string and padding that is longer than 7 bits or not all ones.
pub(super) fn huffman_decode(src: &[u8], dst: &mut Vec<u8>) -> Result<(), &'static str> {
    let t = &HUFF;
    dst.reserve(src.len() + src.len() / 2);
    let mut acc: u64 = 0; // unread bits, left-aligned
    let mut nbits: u32 = 0;
    let mut i = 0;
    loop {
        while nbits <= 56 && i < src.len() {
            acc |= u64::from(src[i]) << (56 - nbits);
            nbits += 8;
            i += 1;
        }
        if nbits == 0 {
            break;
        }
        let (sym, len) = t.lut8[(acc >> 56) as usize];
        let len = u32::from(len);
        if len != 0 {
            if len > nbits {
                break; // only padding can be left
            }
            dst.push(sym);
            acc <<= len;
            nbits -= len;
            continue;
        }
        // A code longer than 8 bits.
        let mut l = 9u32;
        let mut found = false;
        while l <= u32::from(EOS_LEN) && l <= nbits {
            let code = (acc >> (64 - l)) as u32;
            let f = t.first[l as usize];
            if code >= f && code - f < u32::from(t.count[l as usize]) {
                let sym = t.syms[t.offset[l as usize] as usize + (code - f) as usize];
                if sym == 256 {
                    return Err("EOS in Huffman string");
                }
                dst.push(sym as u8);
                acc <<= l;
                nbits -= l;
                found = true;
                break;
            }
            l += 1;
        }
        if !found {
            break;
        }
    }
    if nbits > 7 {
        return Err("Huffman padding too long");
    }
    if nbits > 0 && (acc >> (64 - nbits)) != (1u64 << nbits) - 1 {
        return Err("invalid Huffman padding");
    }
    Ok(())
}
