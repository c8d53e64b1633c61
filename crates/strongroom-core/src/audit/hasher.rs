//! The hash input of an audit event (see `AuditEvent::hash_over`): each
//! field length-prefixed, optional ones tagged, gathered in a buffer and
//! handed to SHA-256 in large pieces.

use ring::digest;

/// The event's hash input, gathered in a buffer on the stack and handed
/// to SHA-256 in a few large pieces instead of two small ones a field (the
/// digest is over the same bytes however they are split).
pub(super) struct Hasher {
    context: digest::Context,
    buf: [u8; HASHER_BUF],
    len: usize,
}

const HASHER_BUF: usize = 512;

impl Hasher {
    pub(super) fn new() -> Self {
        Self {
            context: digest::Context::new(&digest::SHA256),
            buf: [0; HASHER_BUF],
            len: 0,
        }
    }
    fn update(&mut self, b: &[u8]) {
        if self.len + b.len() > HASHER_BUF {
            self.context.update(&self.buf[..self.len]);
            self.len = 0;
            if b.len() > HASHER_BUF {
                self.context.update(b);
                return;
            }
        }
        self.buf[self.len..self.len + b.len()].copy_from_slice(b);
        self.len += b.len();
    }
    pub(super) fn bytes(&mut self, b: &[u8]) {
        self.update(&(b.len() as u64).to_be_bytes());
        self.update(b);
    }
    pub(super) fn opt(&mut self, b: Option<&[u8]>) {
        match b {
            None => self.update(&[0]),
            Some(b) => {
                self.update(&[1]);
                self.bytes(b);
            }
        }
    }
    pub(super) fn finish(mut self) -> digest::Digest {
        self.context.update(&self.buf[..self.len]);
        self.context.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The buffered hasher digests exactly the bytes it was given, however
    /// they are split: pieces smaller than its buffer, ones that fill it,
    /// and ones larger than it.
    #[test]
    fn the_hasher_digests_its_pieces_concatenated() {
        for sizes in [
            vec![0, 1, 8, 3],
            vec![511, 1, 1],
            vec![512, 0, 513],
            vec![100, 500, 2000, 7, 1024, 511],
        ] {
            let mut h = Hasher::new();
            let mut all = Vec::new();
            for (i, n) in sizes.iter().enumerate() {
                let piece: Vec<u8> = (0..*n).map(|j| (i * 31 + j) as u8).collect();
                h.update(&piece);
                all.extend_from_slice(&piece);
            }
            assert_eq!(
                h.finish().as_ref(),
                digest::digest(&digest::SHA256, &all).as_ref(),
                "{sizes:?}"
            );
        }
    }
}
