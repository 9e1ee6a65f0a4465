//! Shared by the streaming targets: turns the fuzz input into a payload plus the
//! fuzzer-chosen sizes of the pieces it is fed in, so parsers see arbitrary TCP segmentation.
//!
//! Layout: `[n] [n x u16 LE piece size] [payload...]` with `n = data[0] % 8`. `n == 0` feeds
//! the payload in one piece. Sizes are used cyclically; a size of 0 feeds an empty piece.

pub fn split(data: &[u8]) -> (Vec<usize>, &[u8]) {
    let Some((&n, rest)) = data.split_first() else {
        return (Vec::new(), data);
    };
    let n = usize::from(n % 8);
    if rest.len() < 2 * n {
        return (Vec::new(), rest);
    }
    let (sizes, payload) = rest.split_at(2 * n);
    let sizes = sizes
        .chunks_exact(2)
        .map(|b| usize::from(u16::from_le_bytes([b[0], b[1]])))
        .collect();
    (sizes, payload)
}

/// Cuts `payload` into consecutive pieces of the given sizes (cycled). Always covers the
/// whole payload; all-zero sizes end with the remainder in one piece.
pub fn pieces<'a>(sizes: &[usize], payload: &'a [u8]) -> Vec<&'a [u8]> {
    if sizes.is_empty() {
        return vec![payload];
    }
    let mut out = Vec::new();
    let mut pos = 0;
    let mut i = 0;
    while pos < payload.len() {
        if i > 2 * payload.len() + sizes.len() {
            out.push(&payload[pos..]);
            break;
        }
        let end = pos
            .saturating_add(sizes[i % sizes.len()])
            .min(payload.len());
        out.push(&payload[pos..end]);
        pos = end;
        i += 1;
    }
    out
}
