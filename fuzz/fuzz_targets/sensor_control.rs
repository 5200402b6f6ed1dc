//! Fuzz target `sensor_control`: a control body of the `ain`, `dht22`,
//! `sonar` and `dac` services as it arrives on `/{host}/{service}/control`,
//! read by `Request::parse` and handed to each service on simulated hardware.
//!
//! Whatever the bytes, nothing panics; a refused configuration leaves the one
//! in force unchanged; an accepted one survives the trip through the saved
//! state (what the agent writes to `{state_dir}/{service}.json`) unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rollcall_hw::iio::sim::{SimDac, SimSensor};
use rollcall_proto::{Request, Topics};
use rollcall_services::dac::DacService;
use rollcall_services::sensor::SensorService;
use rollcall_services::{Ctx, Service, ain, dht22, sonar};

fn services() -> Vec<Box<dyn Service>> {
    let mut all: Vec<Box<dyn Service>> = [ain::SPEC, dht22::SPEC, sonar::SPEC]
        .into_iter()
        .map(|spec| {
            Box::new(SensorService::new(spec, Box::new(SimSensor::new(1)))) as Box<dyn Service>
        })
        .collect();
    all.push(Box::new(DacService::new(Box::new(SimDac::new()))));
    all
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
    for (mut svc, mut fresh) in services().into_iter().zip(services()) {
        let before = svc.saved_state();
        match svc.control(&request.body, &ctx) {
            Err(_) => assert_eq!(
                svc.saved_state(),
                before,
                "a refused control changed {}",
                svc.name()
            ),
            Ok(_) => {
                let saved = svc.saved_state().expect("a configured service saves");
                fresh
                    .restore(saved.clone(), &ctx)
                    .expect("a saved state restores");
                assert_eq!(
                    fresh.saved_state(),
                    Some(saved),
                    "{} changed on the way back",
                    svc.name()
                );
            }
        }
    }
});
