//! A storage file region dressed for net's zero-copy sender: net knows regions only by their
//! file descriptor, position and length, and storage knows nothing of sockets.

use std::os::fd::{BorrowedFd, RawFd};

use sluice_storage::{Disk, DiskFile, FileRegion, RealDisk};

pub type RealFile = <RealDisk as Disk>::File;

pub struct Region(pub FileRegion<RealFile>);

impl sluice_net::Region for Region {
    fn len(&self) -> u64 {
        self.0.len
    }
}

impl sluice_net::SpliceSource for Region {
    fn fd(&self) -> BorrowedFd<'_> {
        let raw: RawFd = self
            .0
            .file
            .raw_fd()
            .expect("real disk files always have a descriptor");
        // SAFETY: the descriptor belongs to the segment file that `self.0.file` keeps open for
        // as long as this region lives.
        unsafe { BorrowedFd::borrow_raw(raw) }
    }

    fn position(&self) -> u64 {
        self.0.position
    }
}
