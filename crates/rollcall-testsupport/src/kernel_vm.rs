//! Debian's own Linux kernel booted in QEMU for a test, so that the GPIO
//! character device and i2c-dev run against real kernel drivers (`gpio-sim`,
//! `i2c-stub`) that this machine does not have. `kernel-vm/prepare.sh`
//! builds the pieces (docs/kernel-vm.md); [`KernelVm::boot`] starts the VM
//! with a folder of the host's shared over 9p, where the VM's `/init` runs
//! `guest.sh` and hands its exit status back.
//!
//! Software emulation (TCG): the `/dev/kvm` of this kind of machine cannot
//! run a stock kernel. A boot with a test takes about 10 s.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{require_program, skip};

/// A kernel and initramfs ready to boot.
#[derive(Debug, Clone)]
pub struct KernelVm {
    qemu: PathBuf,
    kernel: PathBuf,
    initrd: PathBuf,
    work: PathBuf,
}

/// What one boot gave back.
#[derive(Debug)]
pub struct VmRun {
    /// `guest.sh`'s exit status, or `None` when the VM never reported one
    /// (it crashed, hung until the timeout, or `/init` failed).
    pub guest_status: Option<i32>,
    /// Everything the VM printed on its serial console.
    pub console: String,
    /// From starting QEMU to its exit.
    pub elapsed: Duration,
}

impl KernelVm {
    /// Prepares the VM under `work` (kept between runs: the kernel source,
    /// the modules and the initramfs are built once), or skips `test` when
    /// this machine cannot (not x86_64, no QEMU, no kernel, headers or
    /// busybox: the reason names what to install).
    pub fn prepare(test: &str, work: &Path) -> Option<KernelVm> {
        if !cfg!(all(target_os = "linux", target_arch = "x86_64")) {
            return skip(test, "the test VM boots Debian's amd64 kernel");
        }
        let qemu = require_program(test, "qemu-system-x86_64", "qemu-system-x86")?;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("kernel-vm/prepare.sh");
        let prepared = Command::new("bash")
            .arg(&script)
            .arg(work)
            .output()
            .expect("run kernel-vm/prepare.sh");
        let stderr = String::from_utf8_lossy(&prepared.stderr);
        if prepared.status.code() == Some(3) {
            return skip(test, stderr.trim());
        }
        assert!(
            prepared.status.success(),
            "kernel-vm/prepare.sh failed:\n{stderr}"
        );
        let stdout = String::from_utf8_lossy(&prepared.stdout);
        let field = |name: &str| -> PathBuf {
            stdout
                .lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix('='))
                .unwrap_or_else(|| panic!("prepare.sh printed no {name}:\n{stdout}"))
                .into()
        };
        Some(KernelVm {
            qemu,
            kernel: field("KERNEL"),
            initrd: field("INITRD"),
            work: work.to_path_buf(),
        })
    }

    /// A fresh, empty folder under the work folder for one test's share.
    pub fn share(&self, name: &str) -> PathBuf {
        let share = self.work.join(format!("share-{name}"));
        let _ = std::fs::remove_dir_all(&share);
        std::fs::create_dir_all(&share).expect("create the share");
        share
    }

    /// Boots with `share` on the guest's `/host` (its `guest.sh` is run) and
    /// the host's `/usr` read-only on the guest's `/usr` (so dynamically
    /// linked test programs and tools run unchanged), and waits at most
    /// `timeout` for the guest to power off.
    pub fn boot(&self, share: &Path, timeout: Duration) -> VmRun {
        let console = share.join("console.log");
        let started = Instant::now();
        let status = Command::new("timeout")
            .args(["--kill-after=5", &timeout.as_secs().max(1).to_string()])
            .arg(&self.qemu)
            .args(["-m", "512", "-smp", "1", "-nographic", "-no-reboot"])
            .arg("-kernel")
            .arg(&self.kernel)
            .arg("-initrd")
            .arg(&self.initrd)
            .args(["-append", "console=ttyS0 panic=-1 quiet loglevel=3"])
            .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
            .arg("-virtfs")
            .arg(format!(
                "local,path={},mount_tag=host0,security_model=none",
                share.display()
            ))
            .arg("-virtfs")
            .arg("local,path=/usr,mount_tag=hostusr,security_model=none,readonly=on")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&console).expect("console log"))
            .stderr(Stdio::inherit())
            .status()
            .expect("run qemu under timeout");
        let elapsed = started.elapsed();
        // isa-debug-exit makes QEMU exit with (status << 1) | 1; an even
        // exit (0 after a plain power-off, 124 from `timeout`) means the
        // guest never reported.
        let guest_status = status
            .code()
            .filter(|code| code & 1 == 1)
            .map(|code| code >> 1);
        let console =
            String::from_utf8_lossy(&std::fs::read(&console).unwrap_or_default()).replace('\r', "");
        VmRun {
            guest_status,
            console,
            elapsed,
        }
    }
}
