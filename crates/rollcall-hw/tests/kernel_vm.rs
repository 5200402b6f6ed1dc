//! The GPIO character-device backend ([`CdevChip`]) against a real Linux
//! kernel: Debian's own, booted in QEMU, with a `gpio-sim` chip standing in
//! for the Raspberry Pi's pin controller.
//!
//! This machine (and CI's) has no `/dev/gpiochip*`, and Debian's kernel does
//! not build `gpio-sim`, so rollcall-testsupport's `kernel-vm/prepare.sh`
//! builds it out of tree and packs a small initramfs (docs/kernel-vm.md). The one host-side test,
//! `cdev_backend_on_a_real_kernel`, boots that kernel with this very test
//! binary on a 9p share and runs the `guest_*` tests inside it, one at a
//! time, then checks that each of them ran and passed.
//!
//! The `guest_*` tests are `#[ignore]`d on the host: each makes its own
//! `gpio-sim` chip through configfs, which only the VM has. Run outside the
//! VM (`--ignored`), they fail and say so rather than pass having tested
//! nothing.
//!
//! What the kernel decides here, and the simulated chip cannot show: that a
//! requested bias reaches the line, that an output's level is what the
//! outside sees, that edges carry CLOCK_MONOTONIC timestamps, that the kernel
//! debounces, that a reconfiguration is taken in place or refused whole, and
//! that the header chip is found by its label.

#![cfg(target_os = "linux")]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use i2cdev::core::I2CDevice;
use i2cdev::linux::LinuxI2CDevice;
use rollcall_hw::HwError;
use rollcall_hw::display::Display;
use rollcall_hw::display::hd44780::Hd44780;
use rollcall_hw::display::i2c::{I2cBus, LinuxI2c};
use rollcall_hw::gpio::cdev::CdevChip;
use rollcall_hw::gpio::{Bias, Edge, EdgeEvent, GpioChip, LineConfig, Pin};
use rollcall_testsupport::KernelVm;

/// Set in the VM by `guest.sh`; the guest tests refuse to run without it.
const IN_VM: &str = "ROLLCALL_KERNEL_VM";

/// Where `guest.sh` asks i2c-stub to put its one device.
const STUB_ADDRESS: u16 = 0x27;

/// How long one boot may take, tests included. Under TCG without KVM the
/// whole run takes about 10 s; the bound is for a loaded CI machine.
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

// ---------------------------------------------------------------------------
// Host side: prepare, boot, check.
// ---------------------------------------------------------------------------

#[test]
fn cdev_backend_on_a_real_kernel() {
    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kernel-vm");
    let Some(vm) = KernelVm::prepare("cdev_backend_on_a_real_kernel", &work) else {
        return;
    };
    // The share: this binary, and the script /init runs.
    let share = vm.share("rollcall-hw");
    let me = std::env::current_exe().unwrap();
    std::fs::copy(&me, share.join("kernel_vm")).unwrap();
    let expected = guest_tests(&me);
    assert!(
        expected.len() >= 9,
        "the guest tests were not listed: {expected:?}"
    );
    std::fs::write(
        share.join("guest.sh"),
        format!(
            "modprobe gpio-sim || exit 90\n\
             modprobe i2c-stub chip_addr={STUB_ADDRESS:#04x} && modprobe i2c-dev || exit 91\n\
             {IN_VM}=1 RUST_BACKTRACE=1 /host/kernel_vm --ignored --exact --test-threads=1 {} \
             > /host/guest.log 2>&1\n\
             rc=$?\ncat /host/guest.log\nexit $rc\n",
            expected.join(" ")
        ),
    )
    .unwrap();

    let run = vm.boot(&share, BOOT_TIMEOUT);
    let log = std::fs::read_to_string(share.join("guest.log")).unwrap_or_default();
    println!(
        "--- guest ({:.1?} from boot to power-off) ---\n{log}",
        run.elapsed
    );
    let Some(status) = run.guest_status else {
        panic!("the VM did not report; console:\n{}", run.console);
    };
    assert_eq!(status, 0, "the guest tests failed (status {status})");
    for name in &expected {
        assert!(
            log.contains(&format!("test {name} ... ok")),
            "{name} did not pass in the VM"
        );
    }
}

/// The guest tests' names, from this binary's own list.
fn guest_tests(me: &Path) -> Vec<String> {
    let listed = Command::new(me)
        .args(["--list", "--ignored"])
        .output()
        .expect("list tests");
    String::from_utf8_lossy(&listed.stdout)
        .lines()
        .filter_map(|line| line.strip_suffix(": test"))
        .filter(|name| name.starts_with("guest_"))
        .map(str::to_string)
        .collect()
}

// ---------------------------------------------------------------------------
// Guest side: a gpio-sim chip made through configfs, and the tests.
// ---------------------------------------------------------------------------

/// A `gpio-sim` chip, live while this lives. The kernel's side of each line
/// is under `sim`: `sim_gpioN/value` is the level the outside world sees,
/// `sim_gpioN/pull` is what the outside world pulls an undriven line to.
struct SimChip {
    config: PathBuf,
    device: PathBuf,
    sim: PathBuf,
}

impl SimChip {
    fn new(name: &str, label: &str, lines: u32) -> SimChip {
        assert!(
            std::env::var_os(IN_VM).is_some(),
            "guest tests run only inside the VM that cdev_backend_on_a_real_kernel boots"
        );
        let config = Path::new("/sys/kernel/config/gpio-sim").join(name);
        let bank = config.join("bank0");
        std::fs::create_dir(&config).unwrap();
        std::fs::create_dir(&bank).unwrap();
        std::fs::write(bank.join("num_lines"), lines.to_string()).unwrap();
        std::fs::write(bank.join("label"), label).unwrap();
        std::fs::write(config.join("live"), "1").unwrap();
        let read = |path: PathBuf| std::fs::read_to_string(path).unwrap().trim().to_string();
        let platform = read(config.join("dev_name"));
        let chip = read(bank.join("chip_name"));
        SimChip {
            device: Path::new("/dev").join(&chip),
            sim: Path::new("/sys/devices/platform").join(platform).join(chip),
            config,
        }
    }

    fn open(&self) -> CdevChip {
        CdevChip::open(&self.device).unwrap()
    }

    /// What the outside world pulls `line` to.
    fn pull(&self, line: Pin, up: bool) {
        let pull = if up { "pull-up" } else { "pull-down" };
        std::fs::write(self.sim.join(format!("sim_gpio{line}/pull")), pull).unwrap();
    }

    fn pull_of(&self, line: Pin) -> String {
        let path = self.sim.join(format!("sim_gpio{line}/pull"));
        std::fs::read_to_string(path).unwrap().trim().to_string()
    }

    /// The level the outside world sees on `line`.
    fn level(&self, line: Pin) -> bool {
        let path = self.sim.join(format!("sim_gpio{line}/value"));
        std::fs::read_to_string(path).unwrap().trim() == "1"
    }

    fn info(&self, line: Pin) -> gpiocdev::line::Info {
        gpiocdev::Chip::from_path(&self.device)
            .unwrap()
            .line_info(line)
            .unwrap()
    }
}

impl Drop for SimChip {
    fn drop(&mut self) {
        let _ = std::fs::write(self.config.join("live"), "0");
        let _ = std::fs::remove_dir(self.config.join("bank0"));
        let _ = std::fs::remove_dir(&self.config);
    }
}

fn output(initial: bool) -> LineConfig {
    LineConfig::Output {
        initial,
        bias: Bias::Disabled,
    }
}

fn input(bias: Bias, edges: bool, debounce: Option<Duration>) -> LineConfig {
    LineConfig::Input {
        bias,
        edges,
        debounce,
    }
}

fn lines<const N: usize>(of: [(Pin, LineConfig); N]) -> BTreeMap<Pin, LineConfig> {
    BTreeMap::from(of)
}

/// CLOCK_MONOTONIC in nanoseconds: the clock the kernel stamps edges with.
fn monotonic_ns() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    u64::try_from(now.tv_sec).unwrap() * 1_000_000_000 + u64::try_from(now.tv_nsec).unwrap()
}

/// A chip whose waker signals a channel, so a test waits for edges instead
/// of sleeping.
fn watched(sim: &SimChip) -> (CdevChip, mpsc::Receiver<()>) {
    let mut chip = sim.open();
    let (tx, rx) = mpsc::channel();
    chip.set_waker(Arc::new(move || {
        let _ = tx.send(());
    }));
    (chip, rx)
}

/// Waits (up to 10 s) until the chip has queued `count` edges, and takes them.
fn edges(chip: &mut CdevChip, woken: &mpsc::Receiver<()>, count: usize) -> Vec<EdgeEvent> {
    let mut seen = chip.take_events();
    while seen.len() < count {
        woken
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("{count} edges expected, saw {seen:?}"));
        seen.extend(chip.take_events());
    }
    seen
}

#[test]
#[ignore = "runs inside the kernel VM that cdev_backend_on_a_real_kernel boots"]
fn guest_outputs_drive_the_line_the_outside_sees() {
    let sim = SimChip::new("outputs", "outputs", 28);
    let mut chip = sim.open();
    assert_eq!(chip.line_count(), 28);
    chip.configure(&lines([(17, output(true)), (18, output(false))]))
        .unwrap();
    assert!(sim.level(17) && !sim.level(18), "initial levels");
    chip.set(17, false).unwrap();
    chip.set(18, true).unwrap();
    assert!(!sim.level(17) && sim.level(18), "levels after set");
    assert!(!chip.get(17).unwrap() && chip.get(18).unwrap(), "read back");
    let info = sim.info(17);
    assert!(info.used);
    assert_eq!(info.consumer, "rollcall");
    assert_eq!(info.direction, gpiocdev::line::Direction::Output);
    assert!(matches!(
        chip.set(5, true),
        Err(HwError::NotAnOutput { pin: 5 })
    ));
}

#[test]
#[ignore = "runs inside the kernel VM that cdev_backend_on_a_real_kernel boots"]
fn guest_a_requested_bias_reaches_the_line() {
    let sim = SimChip::new("bias", "bias", 28);
    let mut chip = sim.open();
    chip.configure(&lines([
        (4, input(Bias::PullUp, false, None)),
        (5, input(Bias::PullDown, false, None)),
    ]))
    .unwrap();
    // An undriven input reads what its pull makes it, through the kernel.
    assert!(chip.get(4).unwrap(), "pulled up reads high");
    assert!(!chip.get(5).unwrap(), "pulled down reads low");
    assert_eq!(sim.pull_of(4), "pull-up");
    assert_eq!(sim.pull_of(5), "pull-down");
    assert_eq!(sim.info(4).bias, Some(gpiocdev::line::Bias::PullUp));
    assert_eq!(sim.info(5).bias, Some(gpiocdev::line::Bias::PullDown));

    // Swapped in place, without releasing the lines.
    chip.configure(&lines([
        (4, input(Bias::PullDown, false, None)),
        (5, input(Bias::PullUp, false, None)),
    ]))
    .unwrap();
    assert!(!chip.get(4).unwrap() && chip.get(5).unwrap());
    assert_eq!(sim.info(4).bias, Some(gpiocdev::line::Bias::PullDown));
}

#[test]
#[ignore = "runs inside the kernel VM that cdev_backend_on_a_real_kernel boots"]
fn guest_an_input_follows_the_outside_level() {
    let sim = SimChip::new("levels", "levels", 28);
    let mut chip = sim.open();
    chip.configure(&lines([(6, input(Bias::Disabled, false, None))]))
        .unwrap();
    sim.pull(6, true);
    assert!(chip.get(6).unwrap());
    sim.pull(6, false);
    assert!(!chip.get(6).unwrap());
}

#[test]
#[ignore = "runs inside the kernel VM that cdev_backend_on_a_real_kernel boots"]
fn guest_edges_carry_the_kernels_monotonic_timestamps() {
    let sim = SimChip::new("edges", "edges", 28);
    sim.pull(22, false);
    let (mut chip, woken) = watched(&sim);
    chip.configure(&lines([(22, input(Bias::Disabled, true, None))]))
        .unwrap();

    let before = monotonic_ns();
    sim.pull(22, true);
    let rising = edges(&mut chip, &woken, 1);
    let between = monotonic_ns();
    sim.pull(22, false);
    let falling = edges(&mut chip, &woken, 1);
    let after = monotonic_ns();

    assert_eq!(rising.len(), 1, "{rising:?}");
    assert_eq!(falling.len(), 1, "{falling:?}");
    let (up, down) = (rising[0], falling[0]);
    assert_eq!((up.pin, up.edge), (22, Edge::Rising));
    assert_eq!((down.pin, down.edge), (22, Edge::Falling));
    assert!(
        (before..=between).contains(&up.timestamp_ns),
        "rising at {} outside [{before}, {between}]",
        up.timestamp_ns
    );
    assert!(
        (between..=after).contains(&down.timestamp_ns),
        "falling at {} outside [{between}, {after}]",
        down.timestamp_ns
    );
}

#[test]
#[ignore = "runs inside the kernel VM that cdev_backend_on_a_real_kernel boots"]
fn guest_the_kernel_debounces_a_glitch() {
    // gpio-sim has no debounce of its own, so this is gpiolib's software
    // debounce, which the kernel applies for any chip that lacks one: an
    // edge restarts a timer, and when it runs out the level is reported if
    // it differs from the last one reported, stamped with that moment.
    const PERIOD: Duration = Duration::from_secs(1);
    let sim = SimChip::new("debounce", "debounce", 28);
    sim.pull(7, false);
    let (mut chip, woken) = watched(&sim);
    chip.configure(&lines([(7, input(Bias::Disabled, true, Some(PERIOD)))]))
        .unwrap();
    assert_eq!(sim.info(7).debounce_period, Some(PERIOD));

    // A glitch far shorter than the period, then a change that lasts.
    sim.pull(7, true);
    sim.pull(7, false);
    let lasting = monotonic_ns();
    sim.pull(7, true);

    let seen = edges(&mut chip, &woken, 1);
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!((seen[0].pin, seen[0].edge), (7, Edge::Rising), "{seen:?}");
    let held = u64::try_from(PERIOD.as_nanos()).unwrap();
    assert!(
        seen[0].timestamp_ns >= lasting + held,
        "reported {} ns after the change, before the level held for {PERIOD:?}",
        seen[0].timestamp_ns.saturating_sub(lasting)
    );
    // Nothing follows: the glitch left no edge behind.
    let late = woken.recv_timeout(2 * PERIOD).map(|()| chip.take_events());
    assert!(
        late.as_ref().map_or(true, Vec::is_empty),
        "a late edge: {late:?}"
    );
    assert!(chip.get(7).unwrap());
}

#[test]
#[ignore = "runs inside the kernel VM that cdev_backend_on_a_real_kernel boots"]
fn guest_reconfiguration_without_a_restart_is_whole_or_nothing() {
    let sim = SimChip::new("reconfigure", "reconfigure", 28);
    let mut chip = sim.open();
    chip.configure(&lines([(17, output(true))])).unwrap();
    assert!(sim.level(17));

    // The same line turns into an input in place.
    chip.configure(&lines([(17, input(Bias::PullDown, false, None))]))
        .unwrap();
    assert!(!chip.get(17).unwrap());
    assert_eq!(sim.info(17).direction, gpiocdev::line::Direction::Input);

    // Another set of lines: 17 is released, 20 driven.
    chip.configure(&lines([(20, output(true))])).unwrap();
    assert!(!sim.info(17).used, "17 released");
    assert!(sim.level(20));
    chip.set(20, false).unwrap();

    // A set that the kernel refuses (line 21 is held by someone else) is
    // refused whole: the previous lines come back as they were.
    let _other = gpiocdev::Request::builder()
        .on_chip(&sim.device)
        .with_consumer("someone-else")
        .with_line(21)
        .as_input()
        .request()
        .unwrap();
    let refused = chip.configure(&lines([(20, output(true)), (21, output(true))]));
    assert!(refused.is_err(), "line 21 is busy: {refused:?}");
    let info = sim.info(20);
    assert!(info.used && info.consumer == "rollcall", "20 held again");
    assert!(!sim.level(20), "20 back at its last commanded level");
    chip.set(20, true).unwrap();
    assert!(sim.level(20));

    // Releasing everything.
    chip.configure(&BTreeMap::new()).unwrap();
    assert!(!sim.info(20).used);
}

#[test]
#[ignore = "runs inside the kernel VM that cdev_backend_on_a_real_kernel boots"]
fn guest_the_header_chip_is_found_by_its_label() {
    // Another chip first in /dev order, then a Pi 4's pin controller with
    // its 58 lines, of which only the header's 28 are offered.
    let _other = SimChip::new("other", "gpio-expander", 8);
    let pi = SimChip::new("pi4", "pinctrl-bcm2711", 58);
    let chip = CdevChip::open_pi().unwrap();
    assert_eq!(chip.path(), pi.device);
    assert_eq!(chip.line_count(), 28);
    drop(pi);
    let pi5 = SimChip::new("pi5", "pinctrl-rp1", 54);
    assert_eq!(CdevChip::open_pi().unwrap().path(), pi5.device);
    drop(pi5);
    assert!(matches!(
        CdevChip::open_pi(),
        Err(HwError::ChipNotFound { .. })
    ));
}

/// The i2c-dev node of the bus i2c-stub made.
fn stub_bus() -> PathBuf {
    assert!(
        std::env::var_os(IN_VM).is_some(),
        "guest tests run only inside the VM that cdev_backend_on_a_real_kernel boots"
    );
    std::fs::read_dir("/sys/class/i2c-dev")
        .unwrap()
        .map(|entry| entry.unwrap())
        .find(|entry| {
            std::fs::read_to_string(entry.path().join("name"))
                .is_ok_and(|name| name.trim() == "SMBus stub driver")
        })
        .map(|entry| Path::new("/dev").join(entry.file_name()))
        .expect("i2c-stub's bus")
}

/// A bus that records every transfer it passes on.
struct Recording {
    bus: LinuxI2c,
    transfers: Vec<Vec<u8>>,
}

impl I2cBus for Recording {
    fn write(&mut self, bytes: &[u8]) -> Result<(), HwError> {
        self.bus.write(bytes)?;
        self.transfers.push(bytes.to_vec());
        Ok(())
    }
}

#[test]
#[ignore = "runs inside the kernel VM that cdev_backend_on_a_real_kernel boots"]
fn guest_display_writes_reach_an_i2c_device_byte_for_byte() {
    // i2c-stub is an SMBus register file, not a PCF8574: it takes no plain
    // I2C transfers, so LinuxI2c sends the same bytes as SMBus transfers,
    // and the stub keeps them where we can read them back. A "send byte"
    // moves its register pointer; an "I2C block write" stores the bytes
    // after the first into the registers from the first on.
    let path = stub_bus();
    let mut stub = LinuxI2CDevice::new(&path, STUB_ADDRESS).unwrap();
    let mut bus = LinuxI2c::open(&path, STUB_ADDRESS).unwrap();

    stub.smbus_write_byte_data(0x10, 0x77).unwrap();
    bus.write(&[0x10]).unwrap();
    assert_eq!(
        stub.smbus_read_byte().unwrap(),
        0x77,
        "pointer moved to 0x10"
    );

    bus.write(&[0x40, 0xa1, 0xb2, 0xc3]).unwrap();
    for (register, byte) in [(0x40, 0xa1), (0x41, 0xb2), (0x42, 0xc3)] {
        assert_eq!(stub.smbus_read_byte_data(register).unwrap(), byte);
    }

    // The LCD driver's own transfers, through the kernel to the device.
    let recording = Recording {
        bus,
        transfers: Vec::new(),
    };
    let mut lcd = Hd44780::new(recording, 16, 2).unwrap();
    lcd.write_at(0, 0, "rollcall").unwrap();
    let last = lcd.bus().transfers.last().unwrap().clone();
    assert!(
        (2..=33).contains(&last.len()),
        "one block write: {last:02x?}"
    );
    for (offset, &byte) in last[1..].iter().enumerate() {
        let register = last[0] + u8::try_from(offset).unwrap();
        assert_eq!(
            stub.smbus_read_byte_data(register).unwrap(),
            byte,
            "register {register:#04x} of {last:02x?}"
        );
    }
}

#[test]
#[ignore = "runs inside the kernel VM that cdev_backend_on_a_real_kernel boots"]
fn guest_a_missing_i2c_device_is_a_clear_error() {
    let path = stub_bus();
    // Selecting an address sends nothing; the first write finds no one.
    let mut bus = LinuxI2c::open(&path, STUB_ADDRESS + 1).unwrap();
    let error = bus.write(&[0x00]).unwrap_err().to_string();
    assert!(
        error.contains("no device acknowledged address 0x28"),
        "{error}"
    );
    assert!(error.contains(&path.display().to_string()), "{error}");
    let error = Hd44780::open(&path, STUB_ADDRESS + 1, 16, 2)
        .unwrap_err()
        .to_string();
    assert!(error.contains("no device acknowledged"), "{error}");
}
