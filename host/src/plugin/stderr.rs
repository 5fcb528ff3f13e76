//! A plugin's stderr: the last few KiB of one call, kept so a fault line can show them (a
//! Rust panic message lands here). Writing never fails and never traps: a chatty plugin only
//! pushes its oldest output out, and the host clears the ring at the start of every call.

use std::collections::VecDeque;
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
    buffer: Arc<Mutex<VecDeque<u8>>>,
}

impl StderrRing {
    fn push(&self, data: &[u8]) {
        let mut ring = self.buffer.lock().expect("stderr lock");
        // Only the tail of a write larger than the ring can stay.
        let keep = &data[data.len().saturating_sub(STDERR_BYTES)..];
        let overflow = (ring.len() + keep.len()).saturating_sub(STDERR_BYTES);
        ring.drain(..overflow);
        ring.extend(keep);
    }

    /// Forgets what was written (done at the start of each call).
    pub fn clear(&self) {
        self.buffer.lock().expect("stderr lock").clear();
    }

    /// What the ring holds, as (lossy) text.
    pub fn text(&self) -> String {
        let mut ring = self.buffer.lock().expect("stderr lock");
        String::from_utf8_lossy(ring.make_contiguous()).into_owned()
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
        let text = ring.text();
        assert_eq!(text.len(), STDERR_BYTES);
        assert!(
            text.ends_with("chatter 9999\npanicked at the end"),
            "{text}"
        );
        ring.write(Bytes::from(vec![b'x'; 3 * STDERR_BYTES]))
            .unwrap();
        assert_eq!(ring.text(), "x".repeat(STDERR_BYTES));
        ring.clear();
        assert_eq!(ring.text(), "");
    }
}
