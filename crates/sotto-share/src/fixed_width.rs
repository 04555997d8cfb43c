//! The fixed-width encodings of chunks and fused shares: tags as 32 bytes
//! each, values as 8 bytes little-endian each (a random share would take
//! ten bytes as a protobuf varint).

/// Tags side by side.
pub(crate) fn tags_to_bytes(tags: &[[u8; 32]]) -> Vec<u8> {
    tags.concat()
}

/// Tags from bytes whose length the caller checked is a multiple of 32.
pub(crate) fn tags_from_bytes(bytes: &[u8]) -> Vec<[u8; 32]> {
    bytes
        .chunks_exact(32)
        .map(|t| {
            let mut tag = [0u8; 32];
            tag.copy_from_slice(t);
            tag
        })
        .collect()
}

/// Values, 8 bytes little-endian each.
pub(crate) fn words_to_bytes(values: &[u64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Values from bytes whose length the caller checked is a multiple of 8.
pub(crate) fn words_from_bytes(bytes: &[u8]) -> Vec<u64> {
    bytes
        .chunks_exact(8)
        .map(|v| {
            let mut word = [0u8; 8];
            word.copy_from_slice(v);
            u64::from_le_bytes(word)
        })
        .collect()
}
