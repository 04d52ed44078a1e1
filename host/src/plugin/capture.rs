//! A bounded capture of a guest's stdout/stderr that never fails a write.
//!
//! It keeps the first [`HEAD`] bytes and a rolling window of the last
//! [`TAIL`] bytes, so a panic message printed after a flood of noise still
//! reaches the operator, while memory stays bounded.

use bytes::Bytes;
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Bytes kept from the start of the output.
pub const HEAD: usize = 4 * 1024;
/// Bytes kept from the end of the output.
pub const TAIL: usize = 12 * 1024;

#[derive(Default)]
struct Buffer {
    head: Vec<u8>,
    tail: VecDeque<u8>,
    total: u64,
}

/// A shared, bounded capture; clones write to the same buffer.
#[derive(Clone, Default)]
pub struct BoundedCapture {
    buffer: Arc<Mutex<Buffer>>,
}

impl BoundedCapture {
    /// A new, empty capture.
    pub fn new() -> Self {
        Self::default()
    }

    fn push(&self, bytes: &[u8]) {
        let mut buf = self.buffer.lock().unwrap_or_else(|p| p.into_inner());
        buf.total = buf.total.saturating_add(bytes.len() as u64);
        let room = HEAD.saturating_sub(buf.head.len());
        let (to_head, rest) = bytes.split_at(room.min(bytes.len()));
        buf.head.extend_from_slice(to_head);
        let rest = if rest.len() > TAIL {
            &rest[rest.len() - TAIL..]
        } else {
            rest
        };
        let tail_len = buf.tail.len();
        let overflow = (tail_len + rest.len()).saturating_sub(TAIL).min(tail_len);
        buf.tail.drain(..overflow);
        buf.tail.extend(rest);
    }

    /// What was captured, as text; elided bytes are marked.
    pub fn text(&self) -> String {
        let buf = self.buffer.lock().unwrap_or_else(|p| p.into_inner());
        let kept = buf.head.len() + buf.tail.len();
        let mut out = String::from_utf8_lossy(&buf.head).into_owned();
        let skipped = buf.total.saturating_sub(kept as u64);
        if skipped > 0 {
            out.push_str(&format!("\n[... {skipped} bytes elided ...]\n"));
        }
        let tail: Vec<u8> = buf.tail.iter().copied().collect();
        out.push_str(&String::from_utf8_lossy(&tail));
        out
    }
}

impl IsTerminal for BoundedCapture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for BoundedCapture {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl OutputStream for BoundedCapture {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

#[async_trait::async_trait]
impl Pollable for BoundedCapture {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for BoundedCapture {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_head_and_tail_of_a_flood() {
        let capture = BoundedCapture::new();
        capture.push(b"first line\n");
        for _ in 0..10_000 {
            capture.push(b"noise noise noise\n");
        }
        capture.push(b"panicked at src/lib.rs:1:1: the real reason\n");
        let text = capture.text();
        assert!(text.starts_with("first line"));
        assert!(text.contains("bytes elided"));
        assert!(text.ends_with("the real reason\n"));
        assert!(text.len() < HEAD + TAIL + 100);
    }
}
