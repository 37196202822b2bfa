//! Cuts a serial byte stream into lines with a hard cap on line length, so a
//! board that never sends `\n` (or sends garbage at the wrong baud) costs at
//! most `max_len` bytes of memory. The cap and the discard-until-newline
//! recovery are tokio-util's `LinesCodec`; this only drives it over a reader
//! directly, because `FramedRead` ends its stream after the first error and
//! an overlong line must not end the port.

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_util::bytes::BytesMut;
use tokio_util::codec::{Decoder, LinesCodec, LinesCodecError};

/// One unit read from the port.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A line without its `\n` and a trailing `\r`.
    Line(String),
    /// A line longer than the cap; its bytes up to the next `\n` are dropped.
    TooLong,
    /// A line that is not UTF-8 (wrong baud, line noise).
    NotUtf8,
}

pub struct LineFramer {
    codec: LinesCodec,
    buffer: BytesMut,
}

impl LineFramer {
    pub fn new(max_len: usize) -> LineFramer {
        LineFramer { codec: LinesCodec::new_with_max_length(max_len), buffer: BytesMut::with_capacity(1024) }
    }

    /// The next frame, or `Ok(None)` at end of stream. A partial last line
    /// at end of stream is dropped: the device went away mid-line, and half
    /// a reading is not a reading.
    pub async fn next_frame<R: AsyncRead + Unpin>(&mut self, reader: &mut R) -> std::io::Result<Option<Frame>> {
        loop {
            match self.codec.decode(&mut self.buffer) {
                Ok(Some(line)) => return Ok(Some(Frame::Line(line))),
                Err(LinesCodecError::MaxLineLengthExceeded) => return Ok(Some(Frame::TooLong)),
                // LinesCodec reports a non-UTF-8 line as InvalidData after
                // consuming it; the reader itself is not touched in decode.
                Err(LinesCodecError::Io(_)) => return Ok(Some(Frame::NotUtf8)),
                Ok(None) => {}
            }
            if reader.read_buf(&mut self.buffer).await? == 0 {
                return Ok(None);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn frames(input: &[u8], max_len: usize) -> Vec<Frame> {
        let mut framer = LineFramer::new(max_len);
        let mut reader = input;
        let mut out = Vec::new();
        while let Some(frame) = framer.next_frame(&mut reader).await.unwrap() {
            out.push(frame);
        }
        out
    }

    fn line(s: &str) -> Frame {
        Frame::Line(s.into())
    }

    #[tokio::test]
    async fn lines_are_cut_at_newlines_and_lose_their_carriage_return() {
        assert_eq!(frames(b"a=1\r\nb=2\n\nc=3", 64).await, vec![line("a=1"), line("b=2"), line("")]);
    }

    #[tokio::test]
    async fn an_overlong_line_is_dropped_whole_and_reading_goes_on() {
        let mut input = b"a=1\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 10_000));
        input.extend(b"\nb=2\n");
        assert_eq!(frames(&input, 16).await, vec![line("a=1"), Frame::TooLong, line("b=2")]);
    }

    #[tokio::test]
    async fn a_line_exactly_at_the_cap_is_kept() {
        assert_eq!(frames(b"abcd\nabcde\nz\n", 4).await, vec![line("abcd"), Frame::TooLong, line("z")]);
    }

    #[tokio::test]
    async fn bytes_that_are_not_utf8_make_one_bad_line() {
        assert_eq!(frames(b"a=\xff\xfe\nb=2\n", 64).await, vec![Frame::NotUtf8, line("b=2")]);
    }

    #[tokio::test]
    async fn an_overlong_line_arriving_in_pieces_is_still_bounded() {
        // A duplex pipe delivers the long line in small reads.
        let (mut tx, mut rx) = tokio::io::duplex(8);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            tx.write_all(&[b'y'; 1000]).await.unwrap();
            tx.write_all(b"\nok=1\n").await.unwrap();
        });
        let mut framer = LineFramer::new(32);
        let mut out = Vec::new();
        while let Some(frame) = framer.next_frame(&mut rx).await.unwrap() {
            assert!(framer.buffer.capacity() < 4096, "the buffer stays bounded");
            out.push(frame);
        }
        writer.await.unwrap();
        assert_eq!(out, vec![Frame::TooLong, line("ok=1")]);
    }
}
