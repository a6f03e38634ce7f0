//! Control calls on one data server's objects (PNFSCTL_DS_PROGRAM):
//! create, remove, truncate, read, write, commit, stat.

use super::{client, Pnfs};
use pnfs_protocol::wire::*;
use pnfs_protocol::{Decoder, XdrDecode, XdrEncode};
use std::io;

impl Pnfs {
    fn control_addr(&self, ds: u32) -> io::Result<String> {
        self.registry
            .get(ds)
            .map(|d| d.control_addr)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("data server {ds} is not registered")))
    }

    pub(super) fn call<A: XdrEncode>(&self, ds: u32, proc_: u32, args: &A) -> io::Result<Vec<u8>> {
        let addr = self.control_addr(ds)?;
        self.ctl.call(&addr, PNFSCTL_DS_PROGRAM, proc_, args)
    }

    fn simple(&self, ds: u32, proc_: u32, args: &impl XdrEncode) -> io::Result<()> {
        let body = self.call(ds, proc_, args)?;
        let r = ctl_res::decode(&mut Decoder::new(&body)).map_err(client::bad_reply)?;
        client::status_result(r.cr_status)
    }

    pub fn obj_create(&self, ds: u32, fh: &[u8]) -> io::Result<()> {
        self.simple(ds, CTL_PROC_OBJ_CREATE, &ctl_obj_args { coa_fh: fh.into() })
    }

    pub fn obj_remove(&self, ds: u32, fh: &[u8]) -> io::Result<()> {
        self.simple(ds, CTL_PROC_OBJ_REMOVE, &ctl_obj_args { coa_fh: fh.into() })
    }

    pub fn obj_truncate(&self, ds: u32, fh: &[u8], size: u64) -> io::Result<()> {
        self.simple(ds, CTL_PROC_OBJ_TRUNCATE, &ctl_truncate_args { cta_fh: fh.into(), cta_size: size })
    }

    pub fn obj_commit(&self, ds: u32, fh: &[u8]) -> io::Result<()> {
        self.simple(ds, CTL_PROC_OBJ_COMMIT, &ctl_obj_args { coa_fh: fh.into() })
    }

    pub fn obj_write(&self, ds: u32, fh: &[u8], offset: u64, data: &[u8], stable: bool) -> io::Result<()> {
        let a = ctl_write_args { cwa_fh: fh.into(), cwa_offset: offset, cwa_stable: stable, cwa_data: data.into() };
        self.simple(ds, CTL_PROC_OBJ_WRITE, &a)
    }

    /// Reads into `buf`; returns the bytes the object had (short at its
    /// end). A DS may answer less than asked before its end: read on.
    pub fn obj_read(&self, ds: u32, fh: &[u8], offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            let a = ctl_read_args { cra_fh: fh.into(), cra_offset: offset + done as u64, cra_count: (buf.len() - done) as u32 };
            let body = self.call(ds, CTL_PROC_OBJ_READ, &a)?;
            let r = ctl_read_res::decode(&mut Decoder::new(&body)).map_err(client::bad_reply)?;
            match r.crs_status {
                ctl_status::CTL_NOENT => break,
                s => client::status_result(s)?,
            }
            let n = r.crs_data.len().min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&r.crs_data[..n]);
            done += n;
            if r.crs_eof || n == 0 {
                break;
            }
        }
        Ok(done)
    }

    /// (object size, space used); a missing object is (0, 0).
    pub fn obj_stat(&self, ds: u32, fh: &[u8]) -> io::Result<(u64, u64)> {
        let body = self.call(ds, CTL_PROC_OBJ_STAT, &ctl_obj_args { coa_fh: fh.into() })?;
        let r = ctl_stat_res::decode(&mut Decoder::new(&body)).map_err(client::bad_reply)?;
        match r.csr_status {
            ctl_status::CTL_NOENT => Ok((0, 0)),
            s => client::status_result(s).map(|_| (r.csr_size, r.csr_space_used)),
        }
    }
}
