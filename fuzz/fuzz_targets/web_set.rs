//! Fuzz target `web_set`: the dashboard's `POST .../set/{item}` body
//! (`web::parse_body`), and the value it carries checked against an
//! interface of each type (`web::check_value`). What is accepted must fit:
//! bools leave as JSON bools, numbers within the range.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rollcall_hub::web::{check_value, parse_body};
use rollcall_proto::{Interface, ValueType};

fuzz_target!(|data: &[u8]| {
    let Ok(value) = parse_body(data) else { return };
    for t in [
        ValueType::Bool,
        ValueType::Int,
        ValueType::Float,
        ValueType::String,
        ValueType::Json,
    ] {
        let iface = Interface::new("x", "/h/s/set/x", t).range(-10.0, 10.0);
        let Ok(checked) = check_value(&iface, value.clone()) else {
            continue;
        };
        match t {
            ValueType::Bool => assert!(checked.is_boolean()),
            ValueType::Int | ValueType::Float => {
                let n = checked.as_f64().expect("a number");
                assert!((-10.0..=10.0).contains(&n), "{n} out of range");
                if t == ValueType::Int {
                    assert_eq!(n.fract(), 0.0);
                }
            }
            ValueType::String => assert!(checked.is_string()),
            ValueType::Json => assert_eq!(checked, value),
        }
    }
});
