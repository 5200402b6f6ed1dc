//! GPIO and PWM through the public API: the simulated chip as the service
//! will use it, sysfs PWM against a sysfs-shaped folder, and software PWM
//! measured in real time (bounded, with generous tolerances).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rollcall_hw::HwError;
use rollcall_hw::gpio::sim::SimChip;
use rollcall_hw::gpio::{Bias, Edge, EdgeEvent, GpioChip, LineConfig, PI_HEADER_LINES, Pin};
use rollcall_hw::pwm::soft::SoftPwm;
use rollcall_hw::pwm::sysfs::SysfsPwm;
use rollcall_hw::pwm::{Polarity, PwmChannel, PwmSettings};

/// Long enough for anything that should happen to happen on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(5);

fn input(bias: Bias, edges: bool) -> LineConfig {
    LineConfig::Input {
        bias,
        edges,
        debounce: Some(Duration::from_millis(10)),
    }
}

/// The notes' example: outputs 25 and 23, inputs 17 and 22 with pull-down.
fn notes_pins() -> BTreeMap<Pin, LineConfig> {
    BTreeMap::from([
        (
            25,
            LineConfig::Output {
                initial: true,
                bias: Bias::Disabled,
            },
        ),
        (
            23,
            LineConfig::Output {
                initial: false,
                bias: Bias::Disabled,
            },
        ),
        (17, input(Bias::PullDown, true)),
        (22, input(Bias::PullDown, true)),
    ])
}

// ---------------------------------------------------------------- SimChip

#[test]
fn sim_configure_set_get_and_read_outputs_back() {
    let mut chip: Box<dyn GpioChip> = Box::new(SimChip::pi());
    let sim = SimChip::pi();
    let handle = sim.handle();
    let mut chip_with_handle: Box<dyn GpioChip> = Box::new(sim);
    assert_eq!(chip.line_count(), PI_HEADER_LINES);

    for chip in [&mut chip, &mut chip_with_handle] {
        chip.configure(&notes_pins()).unwrap();
        assert!(chip.get(25).unwrap(), "initial level");
        assert!(!chip.get(23).unwrap());
        assert!(!chip.get(17).unwrap(), "pull-down");
        chip.set(23, true).unwrap();
        chip.set(25, false).unwrap();
        assert!(chip.get(23).unwrap());
        assert!(!chip.get(25).unwrap());
    }
    assert_eq!(handle.level(23), Some(true));
    assert_eq!(handle.level(25), Some(false));
    assert_eq!(handle.level(4), None);
    assert_eq!(handle.line_config(17), Some(input(Bias::PullDown, true)));
}

#[test]
fn sim_drive_records_edges_and_calls_the_waker() {
    let mut chip = SimChip::pi();
    let handle = chip.handle();
    chip.configure(&notes_pins()).unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    {
        let calls = Arc::clone(&calls);
        let seen = Arc::clone(&seen);
        let reader = handle.clone();
        // The waker reads the chip: it must be called without the chip's
        // lock held, or this would deadlock.
        chip.set_waker(Arc::new(move || {
            calls.fetch_add(1, Ordering::SeqCst);
            seen.lock().unwrap().push(reader.level(17));
        }));
    }
    handle.drive(17, true).unwrap();
    handle.drive(17, true).unwrap(); // no change, no edge
    handle.drive(22, false).unwrap(); // already low: no edge
    handle.drive(17, false).unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(*seen.lock().unwrap(), vec![Some(true), Some(false)]);

    let events = chip.take_events();
    let shape: Vec<(Pin, Edge)> = events.iter().map(|e| (e.pin, e.edge)).collect();
    assert_eq!(shape, vec![(17, Edge::Rising), (17, Edge::Falling)]);
    assert!(
        events[0].timestamp_ns <= events[1].timestamp_ns,
        "monotonic"
    );
    assert!(chip.take_events().is_empty());
    assert!(!chip.get(17).unwrap());

    // Outputs cannot be driven from outside, nor lines not configured.
    assert!(matches!(
        handle.drive(25, true),
        Err(HwError::NotAnInput { pin: 25 })
    ));
    assert!(matches!(
        handle.drive(4, true),
        Err(HwError::NotAnInput { pin: 4 })
    ));
    assert!(matches!(
        handle.drive(99, true),
        Err(HwError::NoSuchLine { pin: 99, .. })
    ));
}

#[test]
fn sim_edges_off_means_levels_change_without_events() {
    let mut chip = SimChip::pi();
    let handle = chip.handle();
    chip.configure(&BTreeMap::from([(5, input(Bias::PullUp, false))]))
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    chip.set_waker(Arc::new(move || {
        counter.fetch_add(1, Ordering::SeqCst);
    }));
    assert!(chip.get(5).unwrap(), "pull-up");
    handle.drive(5, false).unwrap();
    assert!(!chip.get(5).unwrap());
    assert!(chip.take_events().is_empty());
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[test]
fn sim_events_cross_threads_to_a_waiting_owner() {
    let mut chip = SimChip::pi();
    let handle = chip.handle();
    chip.configure(&notes_pins()).unwrap();
    let (tx, rx) = mpsc::channel();
    chip.set_waker(Arc::new(move || {
        let _ = tx.send(());
    }));
    let presser = std::thread::spawn(move || {
        handle.drive(22, true).unwrap();
        handle.drive(22, false).unwrap();
    });
    let mut events: Vec<EdgeEvent> = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    while events.len() < 2 {
        let left = deadline.saturating_duration_since(Instant::now());
        rx.recv_timeout(left).expect("the waker was called");
        events.extend(chip.take_events());
    }
    presser.join().unwrap();
    let edges: Vec<Edge> = events.iter().map(|e| e.edge).collect();
    assert_eq!(edges, vec![Edge::Rising, Edge::Falling]);
}

#[test]
fn sim_configuration_is_applied_whole_or_not_at_all() {
    let mut chip = SimChip::pi();
    let handle = chip.handle();
    chip.configure(&notes_pins()).unwrap();
    chip.set(23, true).unwrap();

    let mut bad = BTreeMap::from([
        (
            4,
            LineConfig::Output {
                initial: true,
                bias: Bias::Disabled,
            },
        ),
        (
            17,
            LineConfig::Output {
                initial: true,
                bias: Bias::Disabled,
            },
        ),
    ]);
    bad.insert(28, input(Bias::PullUp, true));
    match chip.configure(&bad) {
        Err(HwError::NoSuchLine { pin: 28, lines: 28 }) => {}
        other => panic!("expected NoSuchLine, got {other:?}"),
    }
    // Nothing of the refused configuration took effect.
    assert!(matches!(
        chip.get(4),
        Err(HwError::NotConfigured { pin: 4 })
    ));
    assert_eq!(handle.line_config(17), Some(input(Bias::PullDown, true)));
    // And the old one still works.
    assert!(chip.get(23).unwrap());
    chip.set(25, false).unwrap();
    assert_eq!(handle.level(25), Some(false));
    handle.drive(17, true).unwrap();
    assert_eq!(chip.take_events().len(), 1);
}

#[test]
fn sim_reconfiguration_releases_lines_left_out() {
    let mut chip = SimChip::pi();
    chip.configure(&notes_pins()).unwrap();
    chip.configure(&BTreeMap::from([(17, input(Bias::PullUp, true))]))
        .unwrap();
    assert!(matches!(
        chip.set(25, true),
        Err(HwError::NotAnOutput { pin: 25 })
    ));
    assert!(matches!(
        chip.get(25),
        Err(HwError::NotConfigured { pin: 25 })
    ));
    assert!(chip.get(17).unwrap(), "now pulled up");
    chip.configure(&BTreeMap::new()).unwrap();
    assert!(matches!(
        chip.get(17),
        Err(HwError::NotConfigured { pin: 17 })
    ));
}

#[test]
fn sim_set_refuses_inputs() {
    let mut chip = SimChip::pi();
    chip.configure(&notes_pins()).unwrap();
    assert!(matches!(
        chip.set(17, true),
        Err(HwError::NotAnOutput { pin: 17 })
    ));
    let message = chip.set(17, true).unwrap_err().to_string();
    assert!(
        message.contains("17") && message.contains("output"),
        "{message}"
    );
}

// ------------------------------------------------------------- sysfs PWM

/// `{root}/class/pwm/pwmchip0` with `export`, `unexport` and `npwm`.
fn fake_pwmchip(root: &Path, npwm: u32) -> PathBuf {
    let chip = root.join("class/pwm/pwmchip0");
    fs::create_dir_all(&chip).unwrap();
    fs::write(chip.join("export"), "").unwrap();
    fs::write(chip.join("unexport"), "").unwrap();
    fs::write(chip.join("npwm"), format!("{npwm}\n")).unwrap();
    chip
}

/// What the kernel creates on export, since a plain folder will not.
fn fake_channel(chip: &Path, channel: u32) -> PathBuf {
    let dir = chip.join(format!("pwm{channel}"));
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("period"), "0\n").unwrap();
    fs::write(dir.join("duty_cycle"), "0\n").unwrap();
    fs::write(dir.join("polarity"), "normal\n").unwrap();
    fs::write(dir.join("enable"), "0\n").unwrap();
    dir
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap().trim().to_string()
}

fn pwm(period_ns: u64, duty_ns: u64, polarity: Polarity, enabled: bool) -> PwmSettings {
    PwmSettings {
        period_ns,
        duty_ns,
        polarity,
        enabled,
    }
}

#[test]
fn sysfs_pwm_writes_settings_and_unexports_on_close() {
    let root = tempfile::tempdir().unwrap();
    let chip = fake_pwmchip(root.path(), 2);
    let dir = fake_channel(&chip, 0);

    let mut channel = SysfsPwm::open(root.path(), 0, 0).unwrap();
    assert_eq!(read(&chip.join("export")), "", "already exported");
    assert_eq!(channel.channel_dir(), dir);
    assert_eq!(channel.settings(), Some(pwm(0, 0, Polarity::Normal, false)));

    let servo = pwm(20_000_000, 1_500_000, Polarity::Normal, true);
    channel.apply(&servo).unwrap();
    assert_eq!(read(&dir.join("period")), "20000000");
    assert_eq!(read(&dir.join("duty_cycle")), "1500000");
    assert_eq!(read(&dir.join("polarity")), "normal");
    assert_eq!(read(&dir.join("enable")), "1");
    assert_eq!(channel.settings(), Some(servo));

    let led = pwm(1_000_000, 250_000, Polarity::Inversed, true);
    channel.apply(&led).unwrap();
    assert_eq!(read(&dir.join("period")), "1000000");
    assert_eq!(read(&dir.join("duty_cycle")), "250000");
    assert_eq!(read(&dir.join("polarity")), "inversed");
    assert_eq!(read(&dir.join("enable")), "1");

    // Refused settings change nothing.
    assert!(matches!(
        channel.apply(&pwm(1_000, 2_000, Polarity::Normal, true)),
        Err(HwError::InvalidPwm { .. })
    ));
    assert_eq!(read(&dir.join("period")), "1000000");
    assert_eq!(channel.settings(), Some(led));

    channel.close().unwrap();
    assert_eq!(read(&dir.join("enable")), "0", "stopped before unexport");
    assert_eq!(read(&chip.join("unexport")), "0");
}

#[test]
fn sysfs_pwm_reads_the_state_it_finds_and_drop_unexports() {
    let root = tempfile::tempdir().unwrap();
    let chip = fake_pwmchip(root.path(), 2);
    let dir = fake_channel(&chip, 1);
    fs::write(dir.join("period"), "40000\n").unwrap();
    fs::write(dir.join("duty_cycle"), "30000\n").unwrap();
    fs::write(dir.join("enable"), "1\n").unwrap();
    {
        let mut channel = SysfsPwm::open(root.path(), 0, 1).unwrap();
        assert_eq!(
            channel.settings(),
            Some(pwm(40_000, 30_000, Polarity::Normal, true))
        );
        // Shorter than the running duty: the duty must go first, or the
        // kernel would refuse the period. The end state is what counts here;
        // the order is `write_plan`'s unit tests'.
        channel
            .apply(&pwm(20_000, 10_000, Polarity::Normal, true))
            .unwrap();
        assert_eq!(read(&dir.join("period")), "20000");
        assert_eq!(read(&dir.join("duty_cycle")), "10000");
    }
    assert_eq!(read(&dir.join("enable")), "0");
    assert_eq!(read(&chip.join("unexport")), "1");
}

#[test]
fn sysfs_pwm_exports_a_missing_channel_and_waits_for_it() {
    let root = tempfile::tempdir().unwrap();
    let chip = fake_pwmchip(root.path(), 2);
    // Play the kernel: create pwm1 once "1" is written to export.
    let kernel = {
        let chip = chip.clone();
        std::thread::spawn(move || {
            let deadline = Instant::now() + PATIENCE;
            while read(&chip.join("export")) != "1" {
                assert!(Instant::now() < deadline, "export never written");
                std::thread::sleep(Duration::from_millis(1));
            }
            fake_channel(&chip, 1);
        })
    };
    let mut channel = SysfsPwm::open(root.path(), 0, 1).unwrap();
    kernel.join().unwrap();
    assert_eq!(read(&chip.join("export")), "1");
    channel
        .apply(&pwm(1_000_000, 500_000, Polarity::Normal, false))
        .unwrap();
    assert_eq!(read(&chip.join("pwm1/duty_cycle")), "500000");
    assert_eq!(read(&chip.join("pwm1/enable")), "0");
}

#[test]
fn sysfs_pwm_open_refuses_missing_chips_and_channels() {
    let root = tempfile::tempdir().unwrap();
    match SysfsPwm::open(root.path(), 0, 0) {
        Err(HwError::Io { path, .. }) => assert!(path.ends_with("pwmchip0")),
        other => panic!("expected Io, got {other:?}"),
    }
    fake_pwmchip(root.path(), 2);
    assert!(matches!(
        SysfsPwm::open(root.path(), 0, 2),
        Err(HwError::InvalidPwm { .. })
    ));
}

#[test]
fn sysfs_pwm_write_failure_is_reported_with_its_file() {
    let root = tempfile::tempdir().unwrap();
    let chip = fake_pwmchip(root.path(), 1);
    let dir = fake_channel(&chip, 0);
    let mut channel = SysfsPwm::open(root.path(), 0, 0).unwrap();
    // A folder where `period` should be: writing it fails.
    fs::remove_file(dir.join("period")).unwrap();
    fs::create_dir(dir.join("period")).unwrap();
    match channel.apply(&pwm(1_000, 500, Polarity::Normal, true)) {
        Err(HwError::Io { path, .. }) => assert!(path.ends_with("pwm0/period")),
        other => panic!("expected Io, got {other:?}"),
    }
    // The state is unknown now, so the next apply starts from scratch.
    assert_eq!(channel.settings(), None);
}

// -------------------------------------------------------------- SoftPwm

type Record = mpsc::Receiver<(bool, Instant)>;

fn recording_soft_pwm() -> (SoftPwm, Record) {
    let (tx, rx) = mpsc::channel();
    let pwm = SoftPwm::new(Box::new(move |value| {
        let _ = tx.send((value, Instant::now()));
        Ok(())
    }));
    (pwm, rx)
}

/// Asserts that nothing more is written for a while: the line is held.
fn assert_quiet(rx: &Record) {
    match rx.recv_timeout(Duration::from_millis(100)) {
        Err(RecvTimeoutError::Timeout) => {}
        other => panic!("the line was switched: {other:?}"),
    }
}

#[test]
fn soft_pwm_keeps_its_duty_ratio() {
    let (mut soft, rx) = recording_soft_pwm();
    let period = Duration::from_millis(10);
    soft.apply(&pwm(10_000_000, 3_000_000, Polarity::Normal, true))
        .unwrap();
    // 20 whole periods: from one rising edge to the 21st.
    let mut writes = Vec::new();
    let mut rises = 0;
    while rises < 21 {
        let (value, at) = rx.recv_timeout(PATIENCE).expect("the line switches");
        if value {
            rises += 1;
        }
        if rises > 0 {
            writes.push((value, at));
        }
    }
    drop(soft);
    let first = writes[0].1;
    let last = writes.last().unwrap().1;
    let high: Duration = writes
        .windows(2)
        .filter(|pair| pair[0].0 && !pair[1].0)
        .map(|pair| pair[1].1 - pair[0].1)
        .sum();
    let total = last - first;
    let ratio = high.as_secs_f64() / total.as_secs_f64();
    assert!(
        (0.2..=0.4).contains(&ratio),
        "duty ratio {ratio:.3} over {total:?}"
    );
    // The grid keeps the periods from drifting; allow a loaded machine its
    // late wake-ups all the same.
    assert!(
        total >= period * 19 && total <= period * 40,
        "20 periods took {total:?}"
    );
}

#[test]
fn soft_pwm_holds_the_line_at_0_and_100_percent() {
    let (mut soft, rx) = recording_soft_pwm();
    soft.apply(&pwm(10_000_000, 0, Polarity::Normal, true))
        .unwrap();
    assert!(!rx.recv_timeout(PATIENCE).unwrap().0);
    assert_quiet(&rx);
    soft.apply(&pwm(10_000_000, 10_000_000, Polarity::Normal, true))
        .unwrap();
    assert!(rx.recv_timeout(PATIENCE).unwrap().0);
    assert_quiet(&rx);
    // Disabled rests at the inactive level: high for inversed polarity.
    soft.apply(&pwm(10_000_000, 5_000_000, Polarity::Inversed, false))
        .unwrap();
    assert_quiet(&rx);
    soft.apply(&pwm(10_000_000, 5_000_000, Polarity::Normal, false))
        .unwrap();
    assert!(!rx.recv_timeout(PATIENCE).unwrap().0);
    assert_quiet(&rx);
}

#[test]
fn soft_pwm_drop_stops_the_thread_and_leaves_the_line_inactive() {
    let (mut soft, rx) = recording_soft_pwm();
    soft.apply(&pwm(10_000_000, 5_000_000, Polarity::Normal, true))
        .unwrap();
    // Running: a few switches.
    let mut last = None;
    for _ in 0..4 {
        last = Some(rx.recv_timeout(PATIENCE).expect("the line switches").0);
    }
    let started = Instant::now();
    drop(soft);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "drop took {:?}",
        started.elapsed()
    );
    // The thread has ended: it dropped the setter, so the channel closes,
    // and the last level written is the inactive one.
    loop {
        match rx.recv_timeout(PATIENCE) {
            Ok((value, _)) => last = Some(value),
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => panic!("the thread outlived its channel"),
        }
    }
    assert_eq!(last, Some(false), "left active");
}

#[test]
fn soft_pwm_drives_a_simulated_line() {
    let mut chip = SimChip::pi();
    let handle = chip.handle();
    chip.configure(&BTreeMap::from([(
        18,
        LineConfig::Output {
            initial: false,
            bias: Bias::Disabled,
        },
    )]))
    .unwrap();
    let chip = Arc::new(Mutex::new(chip));
    let (tx, rx) = mpsc::channel();
    let line = Arc::clone(&chip);
    let mut soft = SoftPwm::new(Box::new(move |value| {
        line.lock().unwrap().set(18, value)?;
        let _ = tx.send(value);
        Ok(())
    }));
    soft.apply(&pwm(20_000_000, 20_000_000, Polarity::Normal, true))
        .unwrap();
    assert!(rx.recv_timeout(PATIENCE).unwrap());
    assert_eq!(handle.level(18), Some(true));
    drop(soft);
    assert_eq!(
        handle.level(18),
        Some(false),
        "stopped at the inactive level"
    );
}
