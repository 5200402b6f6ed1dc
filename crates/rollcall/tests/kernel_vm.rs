//! The whole agent on a real kernel: `rollcall agent` with `chip = "auto"`
//! inside Debian's kernel booted in QEMU (rollcall-testsupport's
//! `KernelVm`), on a `gpio-sim` chip labelled like a Raspberry Pi 4's, its
//! GPIO service configured, driven, read and reconfigured over MQTT while it
//! runs. The steps are `kernel-vm/agent.sh`, run inside the VM; this test
//! boots it and checks every step passed.
//!
//! The backend itself, line by line, is tested the same way in
//! `crates/rollcall-hw/tests/kernel_vm.rs`.

#![cfg(target_os = "linux")]

use std::path::Path;
use std::time::Duration;

use rollcall_testsupport::KernelVm;

/// The steps `agent.sh` reports, each of which must pass.
const STEPS: &[&str] = &[
    "agent online",
    "gpio service found the chip labelled pinctrl-bcm2711",
    "output lamp configured high on line 23",
    "lamp's retained value is 1",
    "set lamp off drives line 23 low",
    "a rising edge on line 22 is published",
    "lamp moved to line 24, high",
    "line 23 is now an input, pulled up by the agent's request",
    "the kernel applied the pull-up",
    "same agent process throughout",
    "agent stopped cleanly on SIGTERM",
];

#[test]
fn the_agent_drives_a_real_kernels_gpio_over_mqtt() {
    const TEST: &str = "the_agent_drives_a_real_kernels_gpio_over_mqtt";
    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kernel-vm");
    let Some(vm) = KernelVm::prepare(TEST, &work) else {
        return;
    };
    // The guest uses the host's mosquitto_pub and mosquitto_sub.
    if rollcall_testsupport::require_program(TEST, "mosquitto_sub", "mosquitto-clients").is_none() {
        return;
    }
    let share = vm.share("agent");
    std::fs::copy(env!("CARGO_BIN_EXE_rollcall"), share.join("rollcall")).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kernel-vm/agent.sh");
    std::fs::copy(script, share.join("guest.sh")).unwrap();

    let run = vm.boot(&share, Duration::from_secs(300));
    println!(
        "--- VM console ({:.1?} from boot to power-off) ---\n{}",
        run.elapsed, run.console
    );
    let Some(status) = run.guest_status else {
        panic!("the VM did not report; console above");
    };
    for step in STEPS {
        assert!(
            run.console.contains(&format!("PASS: {step}")),
            "step not passed in the VM: {step}"
        );
    }
    assert_eq!(status, 0, "{status} step(s) failed in the VM");
}
