//! The chunked body decoder against literal bytes: data, trailers, and every
//! framing fault, fed whole and one byte at a time.

use cairn_proto::http::{Chunk, ChunkedDecoder, Error, Limits};

/// Decodes `input` feeding `piece` bytes at a time; returns the data and
/// the bytes used, or the error.
fn decode(input: &[u8], piece: usize) -> Result<(Vec<u8>, usize), Error> {
    let mut decoder = ChunkedDecoder::new(Limits::default());
    let mut data = Vec::new();
    let (mut start, mut end) = (0, 0);
    loop {
        let window = &input[start..end];
        match decoder.decode(window)? {
            Chunk::Data { start: s, end: e } => {
                data.extend_from_slice(&window[s..e]);
                start += e;
            }
            Chunk::End { consumed } => return Ok((data, start + consumed)),
            Chunk::Partial if end == input.len() => return Err(Error::UnexpectedEof),
            Chunk::Partial => end = (end + piece).min(input.len()),
        }
    }
}

/// Asserts `input` decodes to `expected` (data, bytes used), whole and bytewise.
#[track_caller]
fn check(input: &[u8], expected: Result<(&[u8], usize), Error>) {
    let expected = expected.map(|(d, n)| (d.to_vec(), n));
    assert_eq!(
        decode(input, input.len().max(1)),
        expected,
        "whole: {:?}",
        String::from_utf8_lossy(input)
    );
    assert_eq!(
        decode(input, 1),
        expected,
        "bytewise: {:?}",
        String::from_utf8_lossy(input)
    );
}

#[test]
fn trailer_section_length_locates_the_trailers_in_the_consumed_bytes() {
    let input: &[u8] = b"5\r\nhello\r\n0\r\nTrailer: x\r\n\r\nNEXT";
    let mut decoder = ChunkedDecoder::new(Limits::default());
    assert_eq!(decoder.trailer_section_len(), 0);
    let mut pos = 0;
    loop {
        match decoder.decode(&input[pos..]).unwrap() {
            Chunk::Data { end, .. } => pos += end,
            Chunk::End { consumed } => {
                pos += consumed;
                break;
            }
            Chunk::Partial => panic!("the input is complete"),
        }
    }
    let len = decoder.trailer_section_len();
    assert_eq!(&input[pos - len..pos], b"Trailer: x\r\n\r\n");
    let mut bare = ChunkedDecoder::new(Limits::default());
    assert_eq!(bare.decode(b"0\r\n\r\n"), Ok(Chunk::End { consumed: 5 }));
    assert_eq!(bare.trailer_section_len(), 2);
}

#[test]
fn valid_chunked_bodies_decode_to_their_data() {
    check(b"0\r\n\r\n", Ok((b"", 5)));
    check(b"5\r\nhello\r\n0\r\n\r\n", Ok((b"hello", 15)));
    check(b"5\r\nhello\r\n0\r\n\r\nGET", Ok((b"hello", 15)));
    check(b"A\r\n0123456789\r\n0\r\n\r\n", Ok((b"0123456789", 20)));
    check(b"a\r\n0123456789\r\n0\r\n\r\n", Ok((b"0123456789", 20)));
    check(b"0005\r\nhello\r\n0\r\n\r\n", Ok((b"hello", 18)));
    check(b"5;name=value\r\nhello\r\n0\r\n\r\n", Ok((b"hello", 26)));
    check(b"5 ;name\r\nhello\r\n0\r\n\r\n", Ok((b"hello", 21)));
    check(b"5;a=\"q s\"\r\nhello\r\n0;x\r\n\r\n", Ok((b"hello", 25)));
    check(
        b"5\r\nhello\r\n0\r\nTrailer: x\r\nOther: y\r\n\r\n",
        Ok((b"hello", 37)),
    );
    check(b"1\r\na\r\n1\r\nb\r\n0\r\n\r\n", Ok((b"ab", 17)));
}

#[test]
fn bad_chunk_sizes_are_400() {
    check(b"zz\r\nhello\r\n0\r\n\r\n", Err(Error::BadChunkSize));
    check(b"+5\r\nhello\r\n0\r\n\r\n", Err(Error::BadChunkSize));
    check(b"-5\r\nhello\r\n0\r\n\r\n", Err(Error::BadChunkSize));
    check(b"0x5\r\nhello\r\n0\r\n\r\n", Err(Error::BadChunkSize));
    check(b"\r\nhello\r\n0\r\n\r\n", Err(Error::BadChunkSize));
    check(b" 5\r\nhello\r\n0\r\n\r\n", Err(Error::BadChunkSize));
    check(b"5 \r\nhello\r\n0\r\n\r\n", Err(Error::BadChunkSize));
    check(b"100000000000000000000\r\n", Err(Error::BadChunkSize));
    check(
        b"000000000000000000000000000000001\r\nx\r\n0\r\n\r\n",
        Err(Error::BadChunkSize),
    );
    assert_eq!(Error::BadChunkSize.status(), 400);
}

#[test]
fn bad_chunk_framing_is_400() {
    check(b"5\r\nhelloXX0\r\n\r\n", Err(Error::BadChunk));
    check(b"5\r\nhello\n0\r\n\r\n", Err(Error::BadChunk));
    check(b"5\nhello\r\n0\r\n\r\n", Err(Error::BadChunkSize));
    check(b"5;a\nhello\r\n0\r\n\r\n", Err(Error::BadChunk));
    check(b"5;a\rb\r\nhello\r\n0\r\n\r\n", Err(Error::BadChunk));
    check(b"5;a\0\r\nhello\r\n0\r\n\r\n", Err(Error::BadChunk));
    check(b"5\r\nhello\r\n0\r\n\n", Err(Error::BadChunk));
    check(
        b"5\r\nhello\r\n0\r\nBad Trailer: x\r\n\r\n",
        Err(Error::BadHeaderName),
    );
    check(
        b"5\r\nhello\r\n0\r\n X: folded\r\n\r\n",
        Err(Error::BadHeaderName),
    );
}

#[test]
fn truncated_bodies_never_complete() {
    check(b"5\r\nhello\r\n", Err(Error::UnexpectedEof));
    check(b"5\r\nhel", Err(Error::UnexpectedEof));
    check(b"5\r\nhello\r\n0\r\n", Err(Error::UnexpectedEof));
    check(b"5\r\nhello\r\n0\r\nT: x\r\n", Err(Error::UnexpectedEof));
}

#[test]
fn partial_consumes_nothing_and_data_always_advances() {
    let mut decoder = ChunkedDecoder::new(Limits::default());
    assert_eq!(decoder.decode(b""), Ok(Chunk::Partial));
    assert_eq!(decoder.decode(b"5"), Ok(Chunk::Partial));
    assert_eq!(decoder.decode(b"5\r"), Ok(Chunk::Partial));
    assert_eq!(
        decoder.decode(b"5\r\n"),
        Ok(Chunk::Data { start: 3, end: 3 })
    );
    assert_eq!(decoder.decode(b"he"), Ok(Chunk::Data { start: 0, end: 2 }));
    assert_eq!(
        decoder.decode(b"llo\r"),
        Ok(Chunk::Data { start: 0, end: 3 })
    );
    assert_eq!(decoder.decode(b"\r"), Ok(Chunk::Partial));
    assert_eq!(
        decoder.decode(b"\r\n0\r\n"),
        Ok(Chunk::Data { start: 5, end: 5 })
    );
    assert!(!decoder.is_done());
    assert_eq!(decoder.decode(b"\r\nNEXT"), Ok(Chunk::End { consumed: 2 }));
    assert!(decoder.is_done());
    assert_eq!(decoder.decode(b"NEXT"), Ok(Chunk::End { consumed: 0 }));
}

#[test]
fn trailer_section_limits_hold() {
    let run = |limits: Limits, input: &[u8]| ChunkedDecoder::new(limits).decode(input);
    let bytes = Limits {
        header_bytes_max: 16,
        ..Limits::default()
    };
    // The trailer section "A: 123456789\r\n\r\n" is 16 bytes.
    assert_eq!(
        run(bytes, b"0\r\nA: 123456789\r\n\r\n"),
        Ok(Chunk::End { consumed: 19 })
    );
    assert_eq!(
        run(bytes, b"0\r\nA: 1234567890\r\n\r\n"),
        Err(Error::HeaderTooLarge)
    );
    let count = Limits {
        header_count_max: 2,
        ..Limits::default()
    };
    assert_eq!(
        run(count, b"0\r\nA: 1\r\nB: 1\r\n\r\n"),
        Ok(Chunk::End { consumed: 17 })
    );
    assert_eq!(
        run(count, b"0\r\nA: 1\r\nB: 1\r\nC: 1\r\n\r\n"),
        Err(Error::TooManyHeaders)
    );
}
