//! The data pattern: every 512-byte block starts with (file number, file
//! offset) as two little-endian u64, the rest is a fixed non-zero byte
//! pattern. A payload buffer is initialised once; each request only
//! rewrites the 16-byte stamps, and reads can check where data came from.

pub const BLOCK: usize = 512;

fn body_byte(i: usize) -> u8 {
    (i as u8).wrapping_mul(29).wrapping_add(0x5b) | 1
}

/// Fills the constant part of every block (once per buffer).
pub fn init(buf: &mut [u8]) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = body_byte(i % BLOCK);
    }
}

/// Writes the stamps of a buffer that goes to `file` at `offset`.
pub fn stamp(buf: &mut [u8], file: u32, offset: u64) {
    for (k, blk) in buf.chunks_mut(BLOCK).enumerate() {
        if blk.len() >= 16 {
            blk[..8].copy_from_slice(&(file as u64).to_le_bytes());
            blk[8..16].copy_from_slice(&(offset + (k * BLOCK) as u64).to_le_bytes());
        }
    }
}

/// Checks data read from `file` at `offset` (a multiple of the block size).
pub fn check(data: &[u8], file: u32, offset: u64) -> Result<(), String> {
    for (k, blk) in data.chunks(BLOCK).enumerate() {
        let at = offset + (k * BLOCK) as u64;
        if blk.len() < 16 {
            return Err(format!("f{file} offset {at}: short block of {} bytes", blk.len()));
        }
        let f = u64::from_le_bytes(blk[..8].try_into().unwrap());
        let o = u64::from_le_bytes(blk[8..16].try_into().unwrap());
        if f != file as u64 || o != at {
            return Err(format!("f{file} offset {at}: block stamped as file {f} offset {o}"));
        }
        if let Some(i) = (16..blk.len()).find(|&i| blk[i] != body_byte(i)) {
            return Err(format!("f{file} offset {}: byte {:#x} where {:#x} was written", at + i as u64, blk[i], body_byte(i)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_and_check() {
        let mut b = vec![0u8; 4096];
        init(&mut b);
        assert!(b.iter().all(|x| *x != 0));
        stamp(&mut b, 3, 8192);
        check(&b, 3, 8192).unwrap();
        // A 1 KiB slice from the middle checks at its own offset.
        check(&b[1024..2048], 3, 8192 + 1024).unwrap();
        assert!(check(&b, 4, 8192).is_err());
        assert!(check(&b, 3, 0).is_err());
        b[700] ^= 1;
        assert!(check(&b, 3, 8192).unwrap_err().contains("offset 8892"));
    }
}
