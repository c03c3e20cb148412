//! A minimal writer for the `newc` cpio format the kernel unpacks as an initramfs.

use std::io::{self, Write};

/// Builds an uncompressed newc archive in memory.
#[derive(Default)]
pub(crate) struct Cpio {
    buf: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn header(&mut self, name: &str, mode: u32, size: usize) -> io::Result<()> {
        self.ino += 1;
        let name_len = name.len() + 1;
        let fields = [
            self.ino,
            mode,
            0, // uid
            0, // gid
            1, // nlink
            0, // mtime
            u32::try_from(size).map_err(|_| io::Error::other(format!("{name} is over 4 GiB")))?,
            0,
            0,
            0,
            0,
            u32::try_from(name_len).map_err(|_| io::Error::other("name too long"))?,
            0, // check
        ];
        self.buf.extend_from_slice(b"070701");
        for field in fields {
            write!(self.buf, "{field:08x}")?;
        }
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
        Ok(())
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    /// Adds a directory (parents must be added first).
    pub(crate) fn dir(&mut self, name: &str) -> io::Result<()> {
        self.header(name, 0o040_755, 0)
    }

    /// Adds a regular file with permission bits `perm`.
    pub(crate) fn file(&mut self, name: &str, perm: u32, data: &[u8]) -> io::Result<()> {
        self.header(name, 0o100_000 | perm, data.len())?;
        self.buf.extend_from_slice(data);
        self.pad();
        Ok(())
    }

    /// Adds a symbolic link `name` -> `target`.
    pub(crate) fn symlink(&mut self, name: &str, target: &str) -> io::Result<()> {
        self.header(name, 0o120_777, target.len())?;
        self.buf.extend_from_slice(target.as_bytes());
        self.pad();
        Ok(())
    }

    /// Appends the trailer and returns the archive.
    pub(crate) fn finish(mut self) -> io::Result<Vec<u8>> {
        self.header("TRAILER!!!", 0, 0)?;
        Ok(self.buf)
    }
}
