//! Fuzz target `set_body`: a body as it arrives on a GPIO output's, a PWM
//! line's or a DAC channel's set topic, read by `Request::parse` and handed
//! to the services on simulated hardware.
//!
//! Whatever the bytes, nothing panics, and a refused value leaves the
//! service's state (what it saves) as it was.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rollcall_hw::gpio::sim::SimChip;
use rollcall_hw::iio::sim::SimDac;
use rollcall_hw::pwm::sim::SimPwm;
use rollcall_proto::{Body, Request, Topics};
use rollcall_services::dac::DacService;
use rollcall_services::gpio::{GpioService, PwmLine, PwmOpener};
use rollcall_services::{Ctx, Service};
use serde_json::json;

fn services(ctx: &Ctx<'_>) -> Vec<(Box<dyn Service>, Vec<&'static str>)> {
    let opener: PwmOpener = Box::new(|_| {
        Ok(PwmLine {
            channel: Box::new(SimPwm::new()),
            on_gpio_line: false,
        })
    });
    let mut gpio = GpioService::new(Box::new(SimChip::pi()), opener);
    gpio.control(
        &Body::Json(json!({"outputs":[{"name":"lamp","pin":23}],
                           "pwm":[{"name":"fan","pin":18}]})),
        ctx,
    )
    .expect("the GPIO configuration");
    let dac = DacService::new(Box::new(SimDac::new()));
    vec![
        (Box::new(gpio), vec!["lamp", "output/lamp", "fan", "pwm/fan", "outputs", "23"]),
        (Box::new(dac), vec!["out", "0", "1"]),
    ]
}

fuzz_target!(|data: &[u8]| {
    let Ok(request) = Request::parse(data) else {
        return;
    };
    let topics = Topics::default();
    let ctx = Ctx {
        host: "pizero1",
        topics: &topics,
        now_ms: 1,
    };
    for (mut svc, items) in services(&ctx) {
        for item in items {
            let before = svc.saved_state();
            if svc.set(item, &request.body, &ctx).is_err() {
                assert_eq!(
                    svc.saved_state(),
                    before,
                    "a refused set of {item} changed {}",
                    svc.name()
                );
            }
        }
    }
});
