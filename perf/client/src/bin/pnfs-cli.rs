//! pnfs-cli: a second NFS client for the lab, run on the host next to the
//! guest's kernel client. Every command is its own client ID and session
//! (no back channel, so it never holds layouts) and goes through the MDS.
//!
//! ```text
//! pnfs-cli --mds HOST:PORT [--minor 1|2] COMMAND ...
//!   write PATH OFFSET LEN BYTE   OPEN (write; created if missing) + WRITEs of
//!                                LEN bytes of BYTE at OFFSET, FILE_SYNC + CLOSE
//!   truncate PATH SIZE           OPEN (write) + SETATTR size + CLOSE
//!   remove PATH                  REMOVE
//!   read-sha256 PATH             OPEN (read) + READ to EOF + CLOSE; prints
//!                                "<sha256 hex> <bytes>"
//!   size PATH                    GETATTR size
//! ```
//! PATH is absolute from the server's root (e.g. /export/dir/file); numbers
//! take a k/m/g suffix (binary units); BYTE is a character ("H"), a decimal
//! or a 0x hex value. Exit status 0 on success, 1 on an NFS or transport
//! error (printed as "pnfs-cli: COMMAND PATH: error"), 2 on bad usage.

use pnfs_client::pnfs_protocol::wire::*;
use pnfs_client::{Client, Error};
use std::process::ExitCode;

const USAGE: &str = "usage: pnfs-cli --mds HOST:PORT [--minor 1|2] \
write PATH OFFSET LEN BYTE | truncate PATH SIZE | remove PATH | read-sha256 PATH | size PATH";

fn parse_num(s: &str) -> Option<u64> {
    let (digits, mul) = match s.chars().last()? {
        'k' | 'K' => (&s[..s.len() - 1], 1u64 << 10),
        'm' | 'M' => (&s[..s.len() - 1], 1 << 20),
        'g' | 'G' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    digits.parse::<u64>().ok()?.checked_mul(mul)
}

fn parse_byte(s: &str) -> Option<u8> {
    if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        return u8::from_str_radix(h, 16).ok();
    }
    if s.len() == 1 {
        return Some(s.as_bytes()[0]);
    }
    s.parse().ok()
}

/// "/export/a/f" -> ("/export/a", "f")
fn split_path(path: &str) -> Option<(&str, &str)> {
    let p = path.trim_end_matches('/');
    let (dir, name) = p.rsplit_once('/')?;
    (!name.is_empty()).then_some((if dir.is_empty() { "/" } else { dir }, name))
}

enum Cmd {
    Write { off: u64, len: u64, byte: u8 },
    Truncate { size: u64 },
    Remove,
    ReadSha,
    Size,
}

fn run(c: &mut Client, path: &str, cmd: &Cmd) -> Result<String, Error> {
    let (dir, name) = split_path(path).ok_or_else(|| Error::Protocol(format!("{path}: not an absolute file path")))?;
    let dirfh = c.lookup_path(dir)?;
    match *cmd {
        Cmd::Write { off, len, byte } => {
            let (fh, sid) = c.open(&dirfh, name, true, OPEN4_SHARE_ACCESS_BOTH)?;
            let chunk = vec![byte; c.max_io().min(len.max(1) as usize)];
            let mut done = 0u64;
            let mut calls = 0;
            while done < len {
                let n = chunk.len().min((len - done) as usize);
                let w = c.write(&fh, &sid, off + done, &chunk[..n], stable_how4::FILE_SYNC4)? as u64;
                if w == 0 {
                    return Err(Error::Protocol(format!("WRITE at {} took 0 bytes", off + done)));
                }
                done += w;
                calls += 1;
            }
            c.close(&fh, &sid)?;
            Ok(format!("wrote {len} bytes of {byte:#04x} at {off} to {path} ({calls} WRITEs, FILE_SYNC)"))
        }
        Cmd::Truncate { size } => {
            let (fh, sid) = c.open(&dirfh, name, false, OPEN4_SHARE_ACCESS_BOTH)?;
            c.setattr_size(&fh, &sid, size)?;
            c.close(&fh, &sid)?;
            Ok(format!("truncated {path} to {size} bytes"))
        }
        Cmd::Remove => {
            c.remove(&dirfh, name)?;
            Ok(format!("removed {path}"))
        }
        Cmd::ReadSha => {
            let (fh, sid) = c.open(&dirfh, name, false, OPEN4_SHARE_ACCESS_READ)?;
            let mut h = Sha256::new();
            let mut off = 0u64;
            loop {
                let (data, eof) = c.read(&fh, &sid, off, c.max_io() as u32)?;
                h.update(&data);
                off += data.len() as u64;
                if eof {
                    break;
                }
                if data.is_empty() {
                    return Err(Error::Protocol(format!("READ at {off} returned nothing without EOF")));
                }
            }
            c.close(&fh, &sid)?;
            Ok(format!("{} {off}", hex(&h.finish())))
        }
        Cmd::Size => {
            let fh = c.lookup(&dirfh, name)?;
            Ok(c.getattr_size(&fh)?.to_string())
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut mds = None;
    let mut minor = 2;
    let mut rest = Vec::new();
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--mds" if i + 1 < args.len() => {
                mds = Some(args[i + 1].clone());
                i += 2;
            }
            "--minor" if i + 1 < args.len() => {
                minor = args[i + 1].parse().unwrap_or(0);
                i += 2;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            _ => {
                rest.push(args[i].clone());
                i += 1;
            }
        }
    }
    let usage = || {
        eprintln!("{USAGE}");
        ExitCode::from(2)
    };
    let Some(mds) = mds else { return usage() };
    let r: Vec<&str> = rest.iter().map(String::as_str).collect();
    let (cmd, path) = match r.as_slice() {
        ["write", p, off, len, b] => match (parse_num(off), parse_num(len), parse_byte(b)) {
            (Some(off), Some(len), Some(byte)) => (Cmd::Write { off, len, byte }, *p),
            _ => return usage(),
        },
        ["truncate", p, size] => match parse_num(size) {
            Some(size) => (Cmd::Truncate { size }, *p),
            None => return usage(),
        },
        ["remove", p] => (Cmd::Remove, *p),
        ["read-sha256", p] => (Cmd::ReadSha, *p),
        ["size", p] => (Cmd::Size, *p),
        _ => return usage(),
    };
    let name = r[0];
    let result = Client::connect(mds.as_str(), minor).and_then(|mut c| run(&mut c, path, &cmd));
    match result {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pnfs-cli: {name} {path}: {e}");
            ExitCode::from(1)
        }
    }
}

/// SHA-256 (FIPS 180-4), enough for checking file contents without a crate.
struct Sha256 {
    h: [u32; 8],
    buf: Vec<u8>,
    len: u64,
}

const K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01,
    0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc,
    0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147,
    0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08,
    0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208,
    0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
];

impl Sha256 {
    fn new() -> Sha256 {
        Sha256 {
            h: [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19],
            buf: Vec::with_capacity(64),
            len: 0,
        }
    }

    fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if !self.buf.is_empty() {
            let n = (64 - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.buf.len() == 64 {
                let b: [u8; 64] = self.buf[..].try_into().expect("64 bytes");
                self.block(&b);
                self.buf.clear();
            }
        }
        let mut blocks = data.chunks_exact(64);
        for b in &mut blocks {
            self.block(b.try_into().expect("64 bytes"));
        }
        self.buf.extend_from_slice(blocks.remainder());
    }

    fn block(&mut self, b: &[u8; 64]) {
        let mut w = [0u32; 64];
        for (i, c) in b.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16].wrapping_add(s0).wrapping_add(w[i - 7]).wrapping_add(s1);
        }
        let [mut a, mut b_, mut c, mut d, mut e, mut f, mut g, mut h] = self.h;
        for i in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = h.wrapping_add(s1).wrapping_add(ch).wrapping_add(K[i]).wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b_) ^ (a & c) ^ (b_ & c);
            let t2 = s0.wrapping_add(maj);
            h = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b_;
            b_ = a;
            a = t1.wrapping_add(t2);
        }
        for (x, y) in self.h.iter_mut().zip([a, b_, c, d, e, f, g, h]) {
            *x = x.wrapping_add(y);
        }
    }

    fn finish(mut self) -> [u8; 32] {
        let bits = self.len.wrapping_mul(8);
        self.update(&[0x80]);
        while self.buf.len() != 56 {
            self.update(&[0]);
        }
        self.update(&bits.to_be_bytes());
        let mut out = [0u8; 32];
        for (o, h) in out.chunks_exact_mut(4).zip(self.h) {
            o.copy_from_slice(&h.to_be_bytes());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(parts: &[&[u8]]) -> String {
        let mut h = Sha256::new();
        parts.iter().for_each(|p| h.update(p));
        hex(&h.finish())
    }

    #[test]
    fn sha256_known_answers() {
        assert_eq!(sha(&[b""]), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(sha(&[b"abc"]), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        let long = b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
        assert_eq!(sha(&[long]), "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
        // Split at every point: the same digest.
        for i in 0..long.len() {
            assert_eq!(sha(&[&long[..i], &long[i..]]), sha(&[long]));
        }
        // A million 'a's, fed in odd pieces.
        let a = vec![b'a'; 1_000_000];
        assert_eq!(sha(&[&a[..333], &a[333..700_001], &a[700_001..]]), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    }

    #[test]
    fn arguments() {
        assert_eq!(parse_num("4m"), Some(4 << 20));
        assert_eq!(parse_num("12"), Some(12));
        assert_eq!(parse_num("1K"), Some(1024));
        assert_eq!(parse_num("x"), None);
        assert_eq!(parse_byte("H"), Some(b'H'));
        assert_eq!(parse_byte("0x48"), Some(0x48));
        assert_eq!(parse_byte("72"), Some(72));
        assert_eq!(parse_byte("300"), None);
        assert_eq!(split_path("/export/d/f"), Some(("/export/d", "f")));
        assert_eq!(split_path("/f"), Some(("/", "f")));
        assert_eq!(split_path("/export/"), Some(("/", "export")));
        assert_eq!(split_path("f"), None);
    }
}
