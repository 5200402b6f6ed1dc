//! The Linux GPIO character device (`/dev/gpiochipN`) through the `gpiocdev`
//! crate, uAPI v2: one line request for the whole configuration, edge events
//! read by a background thread with the kernel's monotonic timestamps.
//!
//! Kept thin on purpose: it cannot run where the tests run (no GPIO chip),
//! so every decision it makes is either the kernel's or a pure function
//! below with a unit test (mapping our settings to gpiocdev's, fitting
//! debounce periods into the request, finding a chip by its label).
//!
//! Reconfiguring the same set of lines changes them in place: the kernel
//! takes the new settings whole or not at all, and an output that stays an
//! output does not glitch. A different set of lines needs a new request, and
//! the kernel refuses lines that another request holds, so the old request
//! is released first; if the new one then fails, the old configuration is
//! requested again with outputs at their last commanded levels. What a
//! released line does between the two requests is the driver's choice
//! (some return it to input), so a relay on an output can drop for that
//! moment when the set of lines changes.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use gpiocdev::line::{self, EdgeDetection, EdgeKind, EventClock, Value};
use gpiocdev::{Chip, Request, request};

use super::{
    Bias, Edge, EdgeEvent, EventWaker, GpioChip, LineConfig, PI_HEADER_LINES, Pin, check_pins,
    push_event,
};
use crate::HwError;

/// Labels of the chip that carries a Raspberry Pi's header: Pi 1 to 3, Pi 4,
/// and the RP1 south bridge of the Pi 5.
pub const PI_CHIP_LABELS: &[&str] = &["pinctrl-bcm2835", "pinctrl-bcm2711", "pinctrl-rp1"];

/// The consumer name the kernel shows for our lines (`gpioinfo`).
const CONSUMER: &str = "rollcall";

/// How long the event thread waits for an edge before it looks at its stop
/// flag: the bound on how long replacing a request or dropping the chip
/// takes, at the cost of ten wake-ups a second while idle.
const EVENT_POLL: Duration = Duration::from_millis(100);

/// The kernel takes at most 64 lines in one request (uAPI v2).
const MAX_LINES_PER_REQUEST: usize = 64;

/// The kernel takes at most 10 attributes in one request besides its
/// default flags: other flag sets, output values and debounce periods.
const MAX_ATTRIBUTES: usize = 10;

/// A GPIO chip opened through its character device.
pub struct CdevChip {
    path: PathBuf,
    lines: u32,
    active: Option<Active>,
    shared: Arc<Shared>,
}

/// What the event thread and the chip's owner share.
struct Shared {
    events: Mutex<VecDeque<EdgeEvent>>,
    waker: Mutex<Option<EventWaker>>,
}

/// The lines held now: one kernel request and the thread reading its edges.
struct Active {
    request: Arc<Request>,
    config: BTreeMap<Pin, LineConfig>,
    /// Levels last commanded on each output, to restore them if a new
    /// request fails after this one was released.
    outputs: BTreeMap<Pin, bool>,
    watcher: Option<Watcher>,
}

/// The thread that reads edge events; dropping it stops and joins it.
struct Watcher {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The queue and the waker stay whole whatever panicked while holding them.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn device_error(path: &Path, source: gpiocdev::Error) -> HwError {
    HwError::Device {
        device: path.to_path_buf(),
        source: Box::new(source),
    }
}

impl CdevChip {
    /// Opens the chip at `path` (`/dev/gpiochip0`), offering all its lines.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, HwError> {
        let path = path.as_ref();
        let chip = Chip::from_path(path).map_err(|e| device_error(path, e))?;
        let info = chip.info().map_err(|e| device_error(path, e))?;
        Ok(CdevChip {
            path: chip.path().to_path_buf(),
            lines: info.num_lines,
            active: None,
            shared: Arc::new(Shared {
                events: Mutex::new(VecDeque::new()),
                waker: Mutex::new(None),
            }),
        })
    }

    /// Opens the first chip (in `/dev` order) whose label is one of `labels`.
    pub fn open_by_label(labels: &[&str]) -> Result<Self, HwError> {
        let chips = list_chips()?;
        match find_chip_by_label(&chips, labels) {
            Some(path) => CdevChip::open(path),
            None => Err(HwError::ChipNotFound {
                wanted: labels.join(" or "),
            }),
        }
    }

    /// Opens a Raspberry Pi's header chip ([`PI_CHIP_LABELS`]) and offers
    /// only the header's lines, BCM 0 to 27: the chip's other lines run the
    /// SD card, the network and the like, and driving them breaks the board.
    pub fn open_pi() -> Result<Self, HwError> {
        Ok(CdevChip::open_by_label(PI_CHIP_LABELS)?.limit_lines(PI_HEADER_LINES))
    }

    /// Offers at most the first `lines` lines of the chip.
    pub fn limit_lines(mut self, lines: u32) -> Self {
        self.lines = self.lines.min(lines);
        self
    }

    /// The chip's device file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn request(&self, lines: &BTreeMap<Pin, LineConfig>) -> Result<Option<Active>, HwError> {
        if lines.is_empty() {
            return Ok(None);
        }
        let request = Request::from_config(request_config(&self.path, lines))
            .with_consumer(CONSUMER)
            .request()
            .map_err(|e| device_error(&self.path, e))?;
        let request = Arc::new(request);
        let watcher = wants_events(lines).then(|| watch(&self.shared, &request));
        Ok(Some(Active {
            request,
            config: lines.clone(),
            outputs: initial_outputs(lines),
            watcher,
        }))
    }
}

impl fmt::Debug for CdevChip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CdevChip")
            .field("path", &self.path)
            .field("lines", &self.lines)
            .field("config", &self.active.as_ref().map(|a| &a.config))
            .finish_non_exhaustive()
    }
}

impl GpioChip for CdevChip {
    fn line_count(&self) -> u32 {
        self.lines
    }

    fn configure(&mut self, lines: &BTreeMap<Pin, LineConfig>) -> Result<(), HwError> {
        check_pins(lines, self.lines)?;
        if lines.len() > MAX_LINES_PER_REQUEST {
            return Err(HwError::Device {
                device: self.path.clone(),
                source: format!("at most {MAX_LINES_PER_REQUEST} lines in one request").into(),
            });
        }
        // Same lines: the kernel changes their settings in place, all or
        // nothing, and outputs that stay outputs do not glitch.
        if let Some(active) = self.active.as_mut()
            && !lines.is_empty()
            && active.config.keys().eq(lines.keys())
        {
            active
                .request
                .reconfigure(&request_config(&self.path, lines))
                .map_err(|e| device_error(&self.path, e))?;
            active.config = lines.clone();
            active.outputs = initial_outputs(lines);
            lock(&self.shared.events).clear();
            if active.watcher.is_none() && wants_events(lines) {
                active.watcher = Some(watch(&self.shared, &active.request));
            }
            return Ok(());
        }
        // Other lines: the kernel refuses lines another request holds, so the
        // old request is released (its thread joined, its file closed) before
        // the new one is made. If the new one fails, the old configuration is
        // requested again with outputs at their last commanded levels.
        let previous = self.active.take().map(|active| {
            active
                .config
                .iter()
                .map(|(&pin, &config)| match config {
                    LineConfig::Output { bias, .. } => (
                        pin,
                        LineConfig::Output {
                            initial: active.outputs.get(&pin).copied().unwrap_or(false),
                            bias,
                        },
                    ),
                    input => (pin, input),
                })
                .collect::<BTreeMap<_, _>>()
        });
        lock(&self.shared.events).clear();
        match self.request(lines) {
            Ok(active) => {
                self.active = active;
                Ok(())
            }
            Err(error) => {
                if let Some(previous) = previous {
                    self.active = self.request(&previous).ok().flatten();
                }
                Err(error)
            }
        }
    }

    fn set(&mut self, pin: Pin, value: bool) -> Result<(), HwError> {
        if pin >= self.lines {
            return Err(HwError::NoSuchLine {
                pin,
                lines: self.lines,
            });
        }
        let active = match self.active.as_mut() {
            Some(active) if active.config.get(&pin).is_some_and(LineConfig::is_output) => active,
            _ => return Err(HwError::NotAnOutput { pin }),
        };
        active
            .request
            .set_value(pin, Value::from(value))
            .map_err(|e| device_error(&self.path, e))?;
        active.outputs.insert(pin, value);
        Ok(())
    }

    fn get(&mut self, pin: Pin) -> Result<bool, HwError> {
        if pin >= self.lines {
            return Err(HwError::NoSuchLine {
                pin,
                lines: self.lines,
            });
        }
        let active = match self.active.as_ref() {
            Some(active) if active.config.contains_key(&pin) => active,
            _ => return Err(HwError::NotConfigured { pin }),
        };
        // Reading back an output works on the Pi's chips; the kernel notes
        // that some drivers cannot.
        active
            .request
            .value(pin)
            .map(bool::from)
            .map_err(|e| device_error(&self.path, e))
    }

    fn take_events(&mut self) -> Vec<EdgeEvent> {
        lock(&self.shared.events).drain(..).collect()
    }

    fn set_waker(&mut self, waker: EventWaker) {
        *lock(&self.shared.waker) = Some(waker);
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            // A panic in the thread has nothing left to clean up.
            let _ = thread.join();
        }
    }
}

/// Starts the thread reading `request`'s edges into `shared`.
fn watch(shared: &Arc<Shared>, request: &Arc<Request>) -> Watcher {
    let stop = Arc::new(AtomicBool::new(false));
    let thread = {
        let request = Arc::clone(request);
        let stop = Arc::clone(&stop);
        let shared = Arc::clone(shared);
        std::thread::Builder::new()
            .name("gpio-events".into())
            .spawn(move || read_events(&request, &stop, &shared))
    };
    Watcher {
        stop,
        // Without a thread (the system refused one) the lines still work;
        // only edges go unreported, and the service's scan remains.
        thread: thread.ok(),
    }
}

/// The event thread: waits for edges a poll period at a time, queues them
/// and calls the waker once per batch.
fn read_events(request: &Request, stop: &AtomicBool, shared: &Shared) {
    while !stop.load(Ordering::Acquire) {
        match request.wait_edge_event(EVENT_POLL) {
            Ok(false) => {}
            Ok(true) => {
                let mut queued = false;
                // Drain what the kernel holds now, so one wake-up covers a burst.
                while let Ok(event) = request.read_edge_event() {
                    push_event(&mut lock(&shared.events), edge_event(&event));
                    queued = true;
                    if !request.has_edge_event().unwrap_or(false) {
                        break;
                    }
                }
                if queued {
                    let waker = lock(&shared.waker).clone();
                    if let Some(waker) = waker {
                        waker();
                    }
                }
            }
            // An interrupted or failing wait is retried a poll period later:
            // giving up would end edge reports silently, retrying at once
            // would spin.
            Err(_) => std::thread::sleep(EVENT_POLL),
        }
    }
}

/// Whether any line asks for edge events, and so needs the event thread.
fn wants_events(lines: &BTreeMap<Pin, LineConfig>) -> bool {
    lines
        .values()
        .any(|config| matches!(config, LineConfig::Input { edges: true, .. }))
}

fn initial_outputs(lines: &BTreeMap<Pin, LineConfig>) -> BTreeMap<Pin, bool> {
    lines
        .iter()
        .filter_map(|(&pin, config)| match config {
            LineConfig::Output { initial, .. } => Some((pin, *initial)),
            LineConfig::Input { .. } => None,
        })
        .collect()
}

/// Our edge event from the kernel's. Lines are requested active-high, so the
/// kernel's rising (inactive to active) is a rising level.
pub fn edge_event(event: &line::EdgeEvent) -> EdgeEvent {
    EdgeEvent {
        pin: event.offset,
        edge: match event.kind {
            EdgeKind::Rising => Edge::Rising,
            EdgeKind::Falling => Edge::Falling,
        },
        timestamp_ns: event.timestamp_ns,
    }
}

/// gpiocdev's settings for one line. `debounce` is what [`fit_debounce`]
/// kept for it, not necessarily what the configuration asked for.
pub fn line_settings(config: &LineConfig, debounce: Option<Duration>) -> line::Config {
    let mut settings = line::Config::default();
    match *config {
        LineConfig::Output { initial, bias } => {
            settings.as_output(Value::from(initial));
            settings.bias = Some(cdev_bias(bias));
        }
        LineConfig::Input { bias, edges, .. } => {
            settings.as_input();
            settings.bias = Some(cdev_bias(bias));
            if edges {
                // Both edges always: which ones matter is the service's call.
                settings.edge_detection = Some(EdgeDetection::BothEdges);
                settings.event_clock = Some(EventClock::Monotonic);
            }
            // The kernel debounces reads as well as edges, so a scanned input
            // benefits too.
            settings.debounce_period = debounce.filter(|period| !period.is_zero());
        }
    }
    settings
}

/// Our bias as gpiocdev's.
fn cdev_bias(bias: Bias) -> line::Bias {
    match bias {
        Bias::Disabled => line::Bias::Disabled,
        Bias::PullUp => line::Bias::PullUp,
        Bias::PullDown => line::Bias::PullDown,
    }
}

/// The request for a whole configuration on the chip at `path`.
pub fn request_config(path: &Path, lines: &BTreeMap<Pin, LineConfig>) -> request::Config {
    let debounce = fit_debounce(lines);
    let mut config = request::Config::default();
    config.on_chip(path);
    for (&pin, line) in lines {
        config
            .with_line(pin)
            .from_line_config(&line_settings(line, debounce.get(&pin).copied()));
    }
    config
}

/// The kernel debounce period each input gets. One request holds at most
/// 10 attributes (uAPI v2), and each distinct flag set beyond the
/// first, the output values and each distinct debounce period take one. When
/// the periods asked for do not all fit, the ones most lines share are kept
/// (the shorter on a tie) and the other lines get none: kernel debounce is a
/// hint, and the service debounces in software anyway.
pub fn fit_debounce(lines: &BTreeMap<Pin, LineConfig>) -> BTreeMap<Pin, Duration> {
    let mut flag_sets = Vec::new();
    let mut periods: BTreeMap<u128, usize> = BTreeMap::new();
    let mut outputs = false;
    for config in lines.values() {
        let flags = match *config {
            LineConfig::Output { .. } => {
                outputs = true;
                None
            }
            LineConfig::Input {
                bias,
                edges,
                debounce,
            } => {
                if let Some(period) = debounce.filter(|p| !p.is_zero()) {
                    *periods.entry(kernel_micros(period)).or_default() += 1;
                }
                Some((bias, edges))
            }
        };
        if !flag_sets.contains(&flags) {
            flag_sets.push(flags);
        }
    }
    let taken = flag_sets.len().saturating_sub(1) + usize::from(outputs);
    let room = MAX_ATTRIBUTES.saturating_sub(taken);
    let mut ranked: Vec<(u128, usize)> = periods.into_iter().collect();
    // Most lines first; BTreeMap order already put shorter periods first and
    // the sort is stable.
    ranked.sort_by_key(|&(_, lines)| std::cmp::Reverse(lines));
    let kept: Vec<u128> = ranked.into_iter().take(room).map(|(us, _)| us).collect();
    lines
        .iter()
        .filter_map(|(&pin, config)| match *config {
            LineConfig::Input {
                debounce: Some(period),
                ..
            } if !period.is_zero() && kept.contains(&kernel_micros(period)) => Some((pin, period)),
            _ => None,
        })
        .collect()
}

/// The kernel counts debounce in whole microseconds, rounding up as gpiocdev
/// does, so two periods within a microsecond are one attribute.
fn kernel_micros(period: Duration) -> u128 {
    (period + Duration::from_nanos(999)).as_micros()
}

/// The first chip, in the order given, whose label is one of `labels`.
pub fn find_chip_by_label<'a>(chips: &'a [(PathBuf, String)], labels: &[&str]) -> Option<&'a Path> {
    chips
        .iter()
        .find(|(_, label)| labels.contains(&label.as_str()))
        .map(|(path, _)| path.as_path())
}

/// Every GPIO chip of the system with its label, in `/dev` order. A chip
/// that cannot be opened (permissions) is left out rather than failing the
/// search for another.
fn list_chips() -> Result<Vec<(PathBuf, String)>, HwError> {
    let paths = gpiocdev::chip::chips().map_err(|e| device_error(Path::new("/dev"), e))?;
    Ok(paths
        .into_iter()
        .filter_map(|path| {
            let info = Chip::from_path(&path).and_then(|chip| chip.info()).ok()?;
            Some((path, info.label))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(bias: Bias, edges: bool, debounce_ms: Option<u64>) -> LineConfig {
        LineConfig::Input {
            bias,
            edges,
            debounce: debounce_ms.map(Duration::from_millis),
        }
    }

    #[test]
    fn outputs_map_to_output_with_their_initial_value() {
        for (initial, value) in [(true, Value::Active), (false, Value::Inactive)] {
            let settings = line_settings(
                &LineConfig::Output {
                    initial,
                    bias: Bias::Disabled,
                },
                None,
            );
            assert_eq!(settings.direction, Some(line::Direction::Output));
            assert_eq!(settings.value, Some(value));
            assert_eq!(settings.edge_detection, None);
            assert_eq!(settings.bias, Some(line::Bias::Disabled));
            assert!(!settings.active_low);
        }
        let pulled = line_settings(
            &LineConfig::Output {
                initial: false,
                bias: Bias::PullDown,
            },
            None,
        );
        assert_eq!(pulled.bias, Some(line::Bias::PullDown));
    }

    #[test]
    fn inputs_map_bias_edges_clock_and_debounce() {
        let cases = [
            (Bias::PullUp, line::Bias::PullUp),
            (Bias::PullDown, line::Bias::PullDown),
            (Bias::Disabled, line::Bias::Disabled),
        ];
        for (bias, expected) in cases {
            let settings =
                line_settings(&input(bias, true, Some(5)), Some(Duration::from_millis(5)));
            assert_eq!(settings.direction, Some(line::Direction::Input));
            assert_eq!(settings.bias, Some(expected));
            assert_eq!(settings.edge_detection, Some(EdgeDetection::BothEdges));
            assert_eq!(settings.event_clock, Some(EventClock::Monotonic));
            assert_eq!(settings.debounce_period, Some(Duration::from_millis(5)));
            assert!(!settings.active_low);
        }
        let quiet = line_settings(&input(Bias::PullUp, false, None), Some(Duration::ZERO));
        assert_eq!(quiet.edge_detection, None);
        assert_eq!(quiet.debounce_period, None);
    }

    #[test]
    fn the_request_holds_every_line_with_its_settings() {
        let lines = BTreeMap::from([
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
            (17, input(Bias::PullDown, true, Some(10))),
            (22, input(Bias::PullDown, false, None)),
        ]);
        let config = request_config(Path::new("/dev/gpiochip0"), &lines);
        assert_eq!(config.chip(), Path::new("/dev/gpiochip0"));
        assert_eq!(config.num_lines(), 4);
        assert_eq!(config.line_config(25).unwrap().value, Some(Value::Active));
        let line17 = config.line_config(17).unwrap();
        assert_eq!(line17.debounce_period, Some(Duration::from_millis(10)));
        assert_eq!(line17.edge_detection, Some(EdgeDetection::BothEdges));
        assert_eq!(config.line_config(22).unwrap().edge_detection, None);
        assert!(config.line_config(4).is_none());
    }

    #[test]
    fn debounce_periods_that_fit_are_all_kept() {
        let lines = BTreeMap::from([
            (1, input(Bias::PullUp, true, Some(5))),
            (2, input(Bias::PullUp, true, Some(10))),
            (3, input(Bias::PullDown, true, None)),
            (
                4,
                LineConfig::Output {
                    initial: true,
                    bias: Bias::Disabled,
                },
            ),
        ]);
        let kept = fit_debounce(&lines);
        assert_eq!(
            kept,
            BTreeMap::from([
                (1, Duration::from_millis(5)),
                (2, Duration::from_millis(10))
            ])
        );
    }

    #[test]
    fn too_many_debounce_periods_keep_the_most_shared() {
        // Pin p asks for p + 1 ms; 12 ms is shared by three lines, 11 ms by two.
        let mut lines = BTreeMap::new();
        for pin in 0..12 {
            lines.insert(pin, input(Bias::PullUp, true, Some(u64::from(pin) + 1)));
        }
        lines.insert(12, input(Bias::PullDown, true, Some(12)));
        lines.insert(13, input(Bias::Disabled, true, Some(12)));
        lines.insert(14, input(Bias::PullUp, false, Some(11)));
        lines.insert(
            20,
            LineConfig::Output {
                initial: false,
                bias: Bias::Disabled,
            },
        );
        // Five flag sets (four inputs' and the outputs') take four attributes,
        // output values one: room for five periods out of twelve.
        let kept = fit_debounce(&lines);
        let periods: std::collections::BTreeSet<u128> =
            kept.values().map(Duration::as_millis).collect();
        assert_eq!(periods, [1, 2, 3, 11, 12].into_iter().collect());
        assert_eq!(kept.get(&13), Some(&Duration::from_millis(12)));
        assert_eq!(kept.get(&14), Some(&Duration::from_millis(11)));
        assert_eq!(kept.get(&0), Some(&Duration::from_millis(1)));
        assert!(!kept.contains_key(&3));
        let config = request_config(Path::new("/dev/gpiochip0"), &lines);
        assert_eq!(config.line_config(3).unwrap().debounce_period, None);
        assert_eq!(
            config.line_config(11).unwrap().debounce_period,
            Some(Duration::from_millis(12))
        );
    }

    #[test]
    fn periods_within_a_microsecond_are_one_attribute() {
        assert_eq!(
            kernel_micros(Duration::from_nanos(5_000_001)),
            kernel_micros(Duration::from_nanos(5_000_900))
        );
        assert_eq!(kernel_micros(Duration::from_millis(5)), 5_000);
    }

    #[test]
    fn kernel_edges_map_to_ours() {
        let event = line::EdgeEvent {
            timestamp_ns: 123_456_789,
            kind: EdgeKind::Falling,
            offset: 17,
            seqno: 4,
            line_seqno: 2,
        };
        assert_eq!(
            edge_event(&event),
            EdgeEvent {
                pin: 17,
                edge: Edge::Falling,
                timestamp_ns: 123_456_789
            }
        );
        let rising = line::EdgeEvent {
            kind: EdgeKind::Rising,
            ..event
        };
        assert_eq!(edge_event(&rising).edge, Edge::Rising);
    }

    #[test]
    fn chips_are_found_by_label_in_order() {
        let chips = vec![
            (
                PathBuf::from("/dev/gpiochip0"),
                "pinctrl-bcm2711".to_string(),
            ),
            (
                PathBuf::from("/dev/gpiochip1"),
                "raspberrypi-exp-gpio".to_string(),
            ),
            (PathBuf::from("/dev/gpiochip4"), "pinctrl-rp1".to_string()),
        ];
        assert_eq!(
            find_chip_by_label(&chips, PI_CHIP_LABELS),
            Some(Path::new("/dev/gpiochip0"))
        );
        assert_eq!(
            find_chip_by_label(&chips, &["raspberrypi-exp-gpio"]),
            Some(Path::new("/dev/gpiochip1"))
        );
        assert_eq!(
            find_chip_by_label(&chips, &["pinctrl-rp1"]),
            Some(Path::new("/dev/gpiochip4"))
        );
        assert_eq!(find_chip_by_label(&chips, &["gpio-mockup-A"]), None);
        assert_eq!(find_chip_by_label(&[], PI_CHIP_LABELS), None);
    }

    fn chips(list: &[(&str, &str)]) -> Vec<(PathBuf, String)> {
        list.iter()
            .map(|(path, label)| (PathBuf::from(path), label.to_string()))
            .collect()
    }

    /// `chip = "auto"` on each board, as `/dev` lists its chips.
    #[test]
    fn auto_finds_the_header_chip_of_each_pi() {
        let pi4 = chips(&[
            ("/dev/gpiochip0", "pinctrl-bcm2711"),
            ("/dev/gpiochip1", "raspberrypi-exp-gpio"),
        ]);
        let zero = chips(&[("/dev/gpiochip0", "pinctrl-bcm2835")]);
        // The Pi 5 on its first kernels: the SoC's own chips come first and
        // RP1, which carries the header, is gpiochip4.
        let pi5_old = chips(&[
            ("/dev/gpiochip0", "gpio-brcmstb@107d508500"),
            ("/dev/gpiochip1", "gpio-brcmstb@107d508520"),
            ("/dev/gpiochip2", "gpio-brcmstb@107d517c00"),
            ("/dev/gpiochip3", "gpio-brcmstb@107d517c20"),
            ("/dev/gpiochip4", "pinctrl-rp1"),
        ]);
        // Later kernels: RP1 is gpiochip0 and the SoC's chips 10 to 13 (the
        // gpiochip4 link that Raspberry Pi OS keeps is resolved to gpiochip0
        // and merged with it when /dev is listed).
        let pi5_new = chips(&[
            ("/dev/gpiochip0", "pinctrl-rp1"),
            ("/dev/gpiochip10", "gpio-brcmstb@107d508500"),
            ("/dev/gpiochip11", "gpio-brcmstb@107d508520"),
            ("/dev/gpiochip12", "gpio-brcmstb@107d517c00"),
            ("/dev/gpiochip13", "gpio-brcmstb@107d517c20"),
        ]);
        let pc = chips(&[("/dev/gpiochip0", "INT34C6:00")]);
        for (board, list, want) in [
            ("Pi 4", &pi4, Some("/dev/gpiochip0")),
            ("Pi Zero", &zero, Some("/dev/gpiochip0")),
            ("Pi 5, old numbering", &pi5_old, Some("/dev/gpiochip4")),
            ("Pi 5, new numbering", &pi5_new, Some("/dev/gpiochip0")),
            ("a PC", &pc, None),
        ] {
            assert_eq!(
                find_chip_by_label(list, PI_CHIP_LABELS),
                want.map(Path::new),
                "{board}"
            );
        }
    }

    #[test]
    fn opening_a_missing_chip_names_the_path() {
        let error = CdevChip::open("/nonexistent/gpiochip9").unwrap_err();
        assert!(
            error.to_string().contains("/nonexistent/gpiochip9"),
            "{error}"
        );
    }

    #[test]
    fn which_configurations_need_the_event_thread() {
        let quiet = BTreeMap::from([
            (1, input(Bias::PullUp, false, None)),
            (
                2,
                LineConfig::Output {
                    initial: true,
                    bias: Bias::Disabled,
                },
            ),
        ]);
        assert!(!wants_events(&quiet));
        let mut loud = quiet.clone();
        loud.insert(3, input(Bias::PullUp, true, None));
        assert!(wants_events(&loud));
        assert_eq!(initial_outputs(&loud), BTreeMap::from([(2, true)]));
    }
}
