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

    mod props {
        use std::pin::Pin;
        use std::task::{Context, Poll};

        use futures::FutureExt;
        use proptest::prelude::*;
        use tokio::io::ReadBuf;

        use super::super::*;
        use crate::proptest_support::config;

        /// Hands out `data` in reads of the sizes in `sizes` (cycled), and
        /// says "not yet" before every read whose turn `pending` marks.
        struct Chunked {
            data: Vec<u8>,
            at: usize,
            sizes: Vec<usize>,
            pending: Vec<bool>,
            turn: usize,
            /// The "not yet" for this turn was already said.
            waited: bool,
        }

        impl Chunked {
            fn new(data: Vec<u8>, sizes: Vec<usize>, pending: Vec<bool>) -> Chunked {
                Chunked { data, at: 0, sizes, pending, turn: 0, waited: false }
            }
        }

        impl AsyncRead for Chunked {
            fn poll_read(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<std::io::Result<()>> {
                let this = &mut *self;
                let turn = this.turn;
                if !this.waited && this.pending.get(turn % this.pending.len().max(1)).copied().unwrap_or(false) {
                    this.waited = true;
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                this.waited = false;
                this.turn += 1;
                let size = this.sizes[turn % this.sizes.len()].max(1);
                let n = size.min(this.data.len() - this.at).min(buf.remaining());
                buf.put_slice(&this.data[this.at..this.at + n]);
                this.at += n;
                Poll::Ready(Ok(()))
            }
        }

        /// The documented framing, written plainly over the whole input.
        fn model(input: &[u8], max_len: usize) -> Vec<Frame> {
            let mut frames = Vec::new();
            let mut rest = input;
            while let Some(newline) = rest.iter().position(|b| *b == b'\n') {
                let line = &rest[..newline];
                rest = &rest[newline + 1..];
                frames.push(if line.len() > max_len {
                    Frame::TooLong
                } else {
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    std::str::from_utf8(line).map_or(Frame::NotUtf8, |s| Frame::Line(s.to_string()))
                });
            }
            // A partial last line is dropped, but one already past the cap was reported.
            if rest.len() > max_len {
                frames.push(Frame::TooLong);
            }
            frames
        }

        /// Every frame of `reader`, checking that memory stays bounded by the
        /// cap, never by the input. Each poll that is not ready drops the
        /// future, as `select!` does on shutdown: nothing may be lost.
        fn frames(mut reader: Chunked, max_len: usize) -> Vec<Frame> {
            let bound = 4 * (1024 + max_len);
            let mut framer = LineFramer::new(max_len);
            let mut out = Vec::new();
            loop {
                let polled = framer.next_frame(&mut reader).now_or_never();
                assert!(framer.buffer.capacity() <= bound, "buffer {} > {bound}", framer.buffer.capacity());
                match polled {
                    None => continue,
                    Some(Ok(Some(frame))) => out.push(frame),
                    Some(Ok(None)) => return out,
                    Some(Err(e)) => panic!("{e}"),
                }
            }
        }

        /// Lines of every kind: short, at the cap, past it, with `\r`, not UTF-8.
        fn stream() -> impl Strategy<Value = Vec<u8>> {
            let piece = prop_oneof![
                4 => "[a-z_0-9]{0,8}=[ -~]{0,12}".prop_map(String::into_bytes),
                1 => prop::collection::vec(any::<u8>(), 0..40),
                1 => (1usize..200).prop_map(|n| vec![b'x'; n]),
                1 => Just(b"\r".to_vec()),
                1 => Just("é€😀".as_bytes().to_vec()),
                1 => Just(vec![0xff, 0xfe]),
            ];
            let line = (prop::collection::vec(piece, 0..4), any::<bool>()).prop_map(|(pieces, newline)| {
                let mut line = pieces.concat();
                if newline {
                    line.push(b'\n');
                }
                line
            });
            prop::collection::vec(line, 0..24).prop_map(|lines| lines.concat())
        }

        proptest! {
            #![proptest_config(config(256))]

            #[test]
            fn framing_is_the_model_whatever_the_chunking(
                input in stream(),
                max_len in 0usize..64,
                sizes in prop::collection::vec(1usize..300, 1..8),
                pending in prop::collection::vec(any::<bool>(), 0..8),
            ) {
                let want = model(&input, max_len);
                let got = frames(Chunked::new(input.clone(), sizes, pending), max_len);
                prop_assert_eq!(&got, &want);
                // And the same as one read of everything.
                let whole = frames(Chunked::new(input.clone(), vec![input.len().max(1)], vec![]), max_len);
                prop_assert_eq!(&whole, &want);
                for frame in &got {
                    if let Frame::Line(line) = frame {
                        prop_assert!(line.len() <= max_len);
                    }
                }
            }
        }

        proptest! {
            #![proptest_config(config(16))]

            /// A board that never sends a newline costs the cap, not the stream.
            #[test]
            fn an_endless_line_is_bounded(
                length in 10_000usize..200_000,
                max_len in 1usize..4096,
                sizes in prop::collection::vec(1usize..8192, 1..4),
            ) {
                let mut input = vec![b'y'; length];
                input.extend_from_slice(b"\nok=1\n");
                let got = frames(Chunked::new(input, sizes, vec![]), max_len);
                let after = if max_len >= 4 { Frame::Line("ok=1".into()) } else { Frame::TooLong };
                let want = vec![Frame::TooLong, after];
                prop_assert_eq!(got, want);
            }
        }
    }
}
