//! A plugin's stderr: the last few KiB of one call, kept so a fault line can show them (a
//! Rust panic message lands here). Writing never fails and never traps: a chatty plugin only
//! pushes its oldest output out, and the host clears the ring at the start of every call.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

/// Bytes of stderr kept per instance.
pub const STDERR_BYTES: usize = 16 << 10;

/// The guest's stderr, as a ring of its last [`STDERR_BYTES`] bytes.
#[derive(Clone, Default)]
pub struct StderrRing {
    buffer: Arc<Mutex<Ring>>,
}

#[derive(Default)]
struct Ring {
    bytes: std::collections::VecDeque<u8>,
    /// Bytes pushed out since the last clear.
    lost: usize,
}

impl StderrRing {
    fn push(&self, data: &[u8]) {
        let mut ring = self.buffer.lock().expect("stderr lock");
        // Only the tail of a write larger than the ring can stay.
        let keep = &data[data.len().saturating_sub(STDERR_BYTES)..];
        ring.lost += data.len() - keep.len();
        let overflow = (ring.bytes.len() + keep.len()).saturating_sub(STDERR_BYTES);
        ring.bytes.drain(..overflow);
        ring.lost += overflow;
        ring.bytes.extend(keep);
    }

    /// Forgets what was written (done at the start of each call).
    pub fn clear(&self) {
        let mut ring = self.buffer.lock().expect("stderr lock");
        ring.bytes.clear();
        ring.lost = 0;
    }

    /// What the ring holds, as (lossy) text, and how many earlier bytes were pushed out.
    pub fn text(&self) -> (String, usize) {
        let ring = self.buffer.lock().expect("stderr lock");
        let (a, b) = ring.bytes.as_slices();
        let mut all = Vec::with_capacity(a.len() + b.len());
        all.extend_from_slice(a);
        all.extend_from_slice(b);
        (String::from_utf8_lossy(&all).into_owned(), ring.lost)
    }
}

#[async_trait::async_trait]
impl OutputStream for StderrRing {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(STDERR_BYTES)
    }
}

#[async_trait::async_trait]
impl Pollable for StderrRing {
    async fn ready(&mut self) {}
}

impl AsyncWrite for StderrRing {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl IsTerminal for StderrRing {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for StderrRing {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_bytes_and_never_refuses_a_write() {
        let mut ring = StderrRing::default();
        for i in 0..10_000 {
            assert!(ring.check_write().unwrap() > 0);
            ring.write(Bytes::from(format!("chatter {i}\n"))).unwrap();
        }
        ring.write(Bytes::from_static(b"panicked at the end"))
            .unwrap();
        let (text, lost) = ring.text();
        assert!(text.len() <= STDERR_BYTES);
        assert!(
            text.ends_with("chatter 9999\npanicked at the end"),
            "{text}"
        );
        assert!(lost > 100_000);
        ring.write(Bytes::from(vec![b'x'; 3 * STDERR_BYTES]))
            .unwrap();
        assert_eq!(ring.text().0.len(), STDERR_BYTES);
        ring.clear();
        assert_eq!(ring.text(), (String::new(), 0));
    }
}
