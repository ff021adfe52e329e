//! Which I/O backend the reactors run on: io_uring when the kernel lets us, or compio's epoll
//! driver, with the reason io_uring was refused, so start-up can say it once and plainly.

use std::fmt;

/// The I/O backend a reactor runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    IoUring,
    Epoll { reason: String },
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Backend::IoUring => write!(f, "io_uring"),
            Backend::Epoll { reason } => write!(f, "epoll fallback ({reason})"),
        }
    }
}

impl Backend {
    pub fn is_io_uring(&self) -> bool {
        matches!(self, Backend::IoUring)
    }
}

/// Asks the kernel for a tiny ring and explains a refusal in terms an operator can act on.
pub fn probe() -> Backend {
    if let Ok(text) = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled") {
        if text.trim() == "2" {
            return epoll("kernel.io_uring_disabled=2 forbids io_uring for every process");
        }
    }
    match try_setup_ring() {
        Ok(()) => Backend::IoUring,
        Err(errno) => epoll(&explain(errno)),
    }
}

fn epoll(reason: &str) -> Backend {
    Backend::Epoll {
        reason: reason.to_owned(),
    }
}

fn explain(errno: i32) -> String {
    match errno {
        libc::ENOSYS => {
            "the kernel has no io_uring (ENOSYS); Sluice wants Linux 6.1 or later".into()
        }
        libc::EPERM => "io_uring_setup was refused (EPERM): a seccomp profile such as Docker's \
                        default, or kernel.io_uring_disabled=1 without the io_uring group"
            .into(),
        libc::ENOMEM => {
            "io_uring_setup failed with ENOMEM: raise RLIMIT_MEMLOCK (ulimit -l)".into()
        }
        other => format!("io_uring_setup failed with errno {other}"),
    }
}

/// Creates and closes a 2-entry ring with the raw syscall, so the errno is ours to read.
fn try_setup_ring() -> Result<(), i32> {
    // The parameter block is 120 bytes on every kernel that has io_uring; zeroed means defaults.
    let mut params = [0u8; 120];
    // SAFETY: io_uring_setup reads and writes only the parameter block we pass, whose size
    // matches the kernel's struct io_uring_params.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 2u32, params.as_mut_ptr()) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
    }
    // SAFETY: `fd` is a descriptor we just received from the kernel and own alone.
    unsafe { libc::close(fd as i32) };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_their_cause() {
        assert!(explain(libc::EPERM).contains("seccomp"));
        assert!(explain(libc::ENOMEM).contains("RLIMIT_MEMLOCK"));
        assert!(explain(libc::ENOSYS).contains("6.1"));
    }

    #[test]
    fn probe_agrees_with_display() {
        let backend = probe();
        let text = backend.to_string();
        assert_eq!(backend.is_io_uring(), text == "io_uring");
    }
}
