//! Payload masking (RFC 6455 §5.3): XOR with a 4-byte key, eight bytes at a
//! time, without `unsafe`.

/// XORs `buf` with `mask`, as if `buf` started `offset` bytes into the payload.
///
/// `offset` lets a payload that arrives in pieces be unmasked piece by piece:
/// the key is rotated so that byte `i` of `buf` meets key byte `(offset + i) % 4`.
/// Applying the same mask twice restores the input.
pub fn apply_mask(buf: &mut [u8], mask: [u8; 4], offset: usize) {
    let mut key = mask;
    key.rotate_left(offset % 4);
    let key64 = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        // chunks_exact_mut yields exactly 8 bytes, so the conversion cannot fail.
        let word: [u8; 8] = (&*chunk).try_into().expect("chunk of 8");
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ key64).to_ne_bytes());
    }
    // Whole 8-byte chunks keep the key phase, so the tail starts at key byte 0.
    for (b, k) in chunks.into_remainder().iter_mut().zip(key.iter().cycle()) {
        *b ^= k;
    }
}

#[cfg(test)]
mod tests {
    use super::apply_mask;

    fn naive(buf: &[u8], mask: [u8; 4], offset: usize) -> Vec<u8> {
        buf.iter()
            .enumerate()
            .map(|(i, b)| b ^ mask[(offset + i) % 4])
            .collect()
    }

    #[test]
    fn masking_matches_the_bytewise_definition_for_every_length_and_offset() {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let data: Vec<u8> = (0..=255u8).collect();
        for len in 0..40 {
            for offset in 0..8 {
                let mut buf = data[..len].to_vec();
                apply_mask(&mut buf, mask, offset);
                assert_eq!(
                    buf,
                    naive(&data[..len], mask, offset),
                    "len {len} offset {offset}"
                );
            }
        }
    }

    #[test]
    fn masking_in_pieces_equals_masking_at_once() {
        let mask = [1, 2, 3, 4];
        let data: Vec<u8> = (0..100u8).collect();
        let mut whole = data.clone();
        apply_mask(&mut whole, mask, 0);
        for split in 0..data.len() {
            let mut pieces = data.clone();
            let (a, b) = pieces.split_at_mut(split);
            apply_mask(a, mask, 0);
            apply_mask(b, mask, split);
            assert_eq!(pieces, whole, "split {split}");
        }
    }

    #[test]
    fn rfc_6455_masked_hello_example_unmasks() {
        let mut payload = [0x7f, 0x9f, 0x4d, 0x51, 0x58];
        apply_mask(&mut payload, [0x37, 0xfa, 0x21, 0x3d], 0);
        assert_eq!(&payload, b"Hello");
    }
}
