//! Direct messages over QUIC streams (wire-spec §12.4).
//!
//! A one-way message is a unidirectional stream: kind `2`, a 4-byte big-endian length, the bytes.
//! A request is a bidirectional stream: kind `3`, length, bytes, then the sender finishes its
//! side; the answer is a status byte, a length and the bytes.

use quinn::{RecvStream, SendStream};
use suprnova_dht::NodeId;
use tokio::sync::oneshot;

/// Status byte of a response.
pub mod status {
    /// The response follows.
    pub const OK: u8 = 0;
    /// The application dropped the request without answering.
    pub const REFUSED: u8 = 1;
    /// The node's incoming queue was full.
    pub const BUSY: u8 = 2;
    /// The request was over the size limit.
    pub const TOO_LARGE: u8 = 3;
}

/// Something a peer sent us directly.
#[derive(Debug)]
pub enum Direct {
    /// A one-way message.
    Message {
        /// Sender (proven by its TLS key).
        from: NodeId,
        /// The bytes.
        data: Vec<u8>,
    },
    /// A request; answer it with [`Responder::respond`] (dropping it refuses the request).
    Request {
        /// Sender (proven by its TLS key).
        from: NodeId,
        /// The bytes.
        data: Vec<u8>,
        /// Where the answer goes.
        responder: Responder,
    },
}

/// Answers one request.
#[derive(Debug)]
pub struct Responder {
    pub(crate) tx: oneshot::Sender<Vec<u8>>,
}

impl Responder {
    /// Sends `data` as the response.
    pub fn respond(self, data: Vec<u8>) {
        let _ = self.tx.send(data);
    }
}

/// Reads a 4-byte length and that many bytes, at most `max`, up to the end of the stream;
/// `Err(true)` if over the limit. Memory grows with what actually arrives, not with the prefix.
pub(crate) async fn read_sized(recv: &mut RecvStream, max: usize) -> Result<Vec<u8>, bool> {
    let mut len = [0u8; 4];
    recv.read_exact(&mut len).await.map_err(|_| false)?;
    let n = u32::from_be_bytes(len) as usize;
    if n > max {
        return Err(true);
    }
    let buf = recv.read_to_end(n).await.map_err(|e| matches!(e, quinn::ReadToEndError::TooLong))?;
    if buf.len() != n {
        return Err(false);
    }
    Ok(buf)
}

/// Writes a 4-byte length and the bytes.
pub(crate) async fn write_sized(send: &mut SendStream, data: &[u8]) -> Result<(), quinn::WriteError> {
    let n = u32::try_from(data.len()).unwrap_or(u32::MAX);
    send.write_all(&n.to_be_bytes()).await?;
    send.write_all(data).await
}

/// Writes a status byte and a sized body.
pub(crate) async fn write_response(send: &mut SendStream, status: u8, data: &[u8]) -> Result<(), quinn::WriteError> {
    send.write_all(&[status]).await?;
    write_sized(send, data).await
}
