//! The cluster as a Markdown page: a summary, the data-flow edges, then each
//! host (address, status, pin map) and each of its services (function,
//! health, one table of its interfaces). GitHub-flavoured tables; every
//! string from the network goes through `escape`.

use std::fmt::Write;

use rollcall_proto::{Health, Interface, ValueType};

use super::escape::{ago, duration, md_code, md_code_cell, md_text, utc};
use super::view::{Cluster, HostView, ServiceView, Status};

/// The Markdown page for `cluster`.
pub fn render(cluster: &Cluster) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail; `let _` keeps that out of every line.
    let _ = write_page(&mut out, cluster);
    out
}

fn write_page(out: &mut String, c: &Cluster) -> std::fmt::Result {
    writeln!(out, "# The rollcall cluster")?;
    writeln!(out)?;
    writeln!(
        out,
        "Written by rollcall (`rollcall docs` or the hub's dashboard) from the cluster map at {}.",
        utc(c.now_ms)
    )?;
    writeln!(out)?;
    let (online, offline, missing) = c.counts();
    let services = c.services().count();
    writeln!(
        out,
        "{} ({online} online, {offline} offline, {missing} missing), {}, {}, {}.",
        plural(c.hosts.len(), "host", "hosts"),
        plural(services, "service", "services"),
        plural(c.topic_count(), "topic", "topics"),
        plural(c.edges.len(), "data-flow edge", "data-flow edges"),
    )?;
    writeln!(out)?;
    if c.hosts.is_empty() {
        writeln!(out, "No host has answered or left its state on the broker.")?;
        return Ok(());
    }
    writeln!(out, "| host | address | status | last seen | services |")?;
    writeln!(out, "| --- | --- | --- | --- | --- |")?;
    for h in &c.hosts {
        let names: Vec<String> = h.services.iter().map(|s| md_code_cell(&s.name)).collect();
        writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            md_code_cell(&h.name),
            h.ipaddr.as_deref().map_or("".into(), md_code_cell),
            status_word(h.status),
            last_seen(c.now_ms, h.last_seen_ms),
            names.join(", "),
        )?;
    }
    writeln!(out)?;
    write_edges(out, c)?;
    write_wiring(out, c)?;
    for h in &c.hosts {
        write_host(out, c, h)?;
    }
    Ok(())
}

fn write_edges(out: &mut String, c: &Cluster) -> std::fmt::Result {
    writeln!(out, "## Data flow")?;
    writeln!(out)?;
    if c.edges.is_empty() {
        writeln!(
            out,
            "No service's output topic matches another service's input topic."
        )?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(
        out,
        "Each row: a topic one service publishes (an output) matches a topic \
         or filter another service consumes (an input). The last message is \
         the latest the hub received on a topic both match; an edge no \
         message crossed for {} is **stale**: a link that may be broken.",
        duration(c.edge_stale_after_ms)
    )?;
    writeln!(out)?;
    writeln!(out, "| from | publishes | to | consumes | last message |")?;
    writeln!(out, "| --- | --- | --- | --- | --- |")?;
    for e in &c.edges {
        let last = match e.last_crossed_ms {
            Some(ms) => format!("{} ({})", utc(ms), ago(c.now_ms, ms)),
            None => "none seen".to_owned(),
        };
        writeln!(
            out,
            "| {} / {} | {} | {} / {} | {} | {}{} |",
            md_code_cell(&e.from.host),
            md_code_cell(&e.from.service),
            md_code_cell(&e.from.topic),
            md_code_cell(&e.to.host),
            md_code_cell(&e.to.service),
            md_code_cell(&e.to.topic),
            if e.stale { "**stale**: " } else { "" },
            last,
        )?;
    }
    writeln!(out)?;
    Ok(())
}

/// What the descriptions say is wired wrong: inputs nothing feeds (a
/// warning), outputs nothing reads (for information).
fn write_wiring(out: &mut String, c: &Cluster) -> std::fmt::Result {
    writeln!(out, "## Wiring")?;
    writeln!(out)?;
    if c.unfed.is_empty() {
        writeln!(
            out,
            "Every input is fed: some service describes an output that matches it \
             (commands, `.../set/...` topics, are written by people and not counted)."
        )?;
    } else {
        writeln!(
            out,
            "**Warning: {} no described output matches** (commands, `.../set/...` \
             topics, are written by people and not counted):",
            plural(c.unfed.len(), "input is unfed:", "inputs are unfed:")
        )?;
        writeln!(out)?;
        writeln!(out, "| host | service | unfed input |")?;
        writeln!(out, "| --- | --- | --- |")?;
        for e in &c.unfed {
            writeln!(
                out,
                "| {} | {} | {} |",
                md_code_cell(&e.host),
                md_code_cell(&e.service),
                md_code_cell(&e.topic)
            )?;
        }
    }
    writeln!(out)?;
    if c.unread.is_empty() {
        writeln!(out, "Every output is read by some described input.")?;
    } else {
        writeln!(
            out,
            "For information, {} no described input reads (normal for a reading \
             people look at):",
            plural(c.unread.len(), "output is unread:", "outputs are unread:")
        )?;
        writeln!(out)?;
        writeln!(out, "| host | service | unread output |")?;
        writeln!(out, "| --- | --- | --- |")?;
        for e in &c.unread {
            writeln!(
                out,
                "| {} | {} | {} |",
                md_code_cell(&e.host),
                md_code_cell(&e.service),
                md_code_cell(&e.topic)
            )?;
        }
    }
    writeln!(out)?;
    Ok(())
}

fn write_host(out: &mut String, c: &Cluster, h: &HostView) -> std::fmt::Result {
    writeln!(out, "## Host {}", md_code(&h.name))?;
    writeln!(out)?;
    writeln!(
        out,
        "- address: {}",
        h.ipaddr.as_deref().map_or("unknown".into(), md_code)
    )?;
    writeln!(out, "- status: {}", status_word(h.status))?;
    writeln!(out, "- last seen: {}", last_seen(c.now_ms, h.last_seen_ms))?;
    writeln!(out)?;
    if !h.pins.is_empty() {
        writeln!(out, "### Pins of {}", md_code(&h.name))?;
        writeln!(out)?;
        writeln!(out, "| pin | service | name | used as |")?;
        writeln!(out, "| ---: | --- | --- | --- |")?;
        for p in &h.pins {
            let clash = h.conflicts.iter().any(|(pin, _)| *pin == p.pin);
            writeln!(
                out,
                "| {}{} | {} | {} | {} |",
                p.pin,
                if clash { " **conflict**" } else { "" },
                md_code_cell(&p.service),
                md_code_cell(&p.name),
                md_text(&p.role),
            )?;
        }
        writeln!(out)?;
    }
    for (pin, why) in &h.conflicts {
        writeln!(
            out,
            "**Pin {pin} is claimed more than once:** {}",
            md_text(why)
        )?;
        writeln!(out)?;
    }
    for s in &h.services {
        write_service(out, h, s)?;
    }
    Ok(())
}

fn write_service(out: &mut String, h: &HostView, s: &ServiceView) -> std::fmt::Result {
    writeln!(
        out,
        "### Service {} on {}",
        md_code(&s.name),
        md_code(&h.name)
    )?;
    writeln!(out)?;
    if let Some(doc) = s.description.as_ref().and_then(|d| d.doc.as_deref()) {
        writeln!(out, "{}", md_text(doc))?;
        writeln!(out)?;
    }
    let presence = if s.present {
        "present"
    } else {
        "**missing**: seen before, not in the latest roll-call"
    };
    writeln!(out, "- {presence}")?;
    match s.health() {
        Some(Health::Ok) => writeln!(out, "- health: ok")?,
        Some(Health::Alert { reason }) => {
            writeln!(out, "- health: **alert**: {}", md_text(reason))?
        }
        None => writeln!(out, "- health: not reported")?,
    }
    writeln!(out)?;
    let interfaces = s.interfaces();
    if s.description.is_none() {
        writeln!(out, "No self-description: its topics are unknown.")?;
        writeln!(out)?;
        return Ok(());
    }
    if interfaces.is_empty() {
        writeln!(out, "It describes no topics.")?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(
        out,
        "| list | name | topic | type | unit | range | retained | doc |"
    )?;
    writeln!(out, "| --- | --- | --- | --- | --- | --- | --- | --- |")?;
    for (category, i) in interfaces {
        writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            category.as_str(),
            md_code_cell(&i.name),
            md_code_cell(&i.topic),
            type_word(i.value_type),
            i.unit.as_deref().map_or(String::new(), md_text),
            range(i),
            if i.retained { "yes" } else { "no" },
            i.doc.as_deref().map_or(String::new(), md_text),
        )?;
    }
    writeln!(out)?;
    Ok(())
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn status_word(s: Status) -> &'static str {
    match s {
        Status::Online => "online",
        Status::Offline => "**offline**",
        Status::Missing => "**missing**",
    }
}

fn last_seen(now_ms: u64, seen: Option<u64>) -> String {
    match seen {
        Some(ms) if ms > 0 => format!("{} ({})", utc(ms), ago(now_ms, ms)),
        _ => "never".to_owned(),
    }
}

pub(crate) fn type_word(t: ValueType) -> &'static str {
    match t {
        ValueType::Bool => "bool",
        ValueType::Int => "int",
        ValueType::Float => "float",
        ValueType::String => "string",
        ValueType::Json => "json",
    }
}

/// `0 to 100`, `≥ 0`, `≤ 5`, or nothing.
fn range(i: &Interface) -> String {
    match (i.min, i.max) {
        (Some(a), Some(b)) => format!("{} to {}", num(a), num(b)),
        (Some(a), None) => format!("≥ {}", num(a)),
        (None, Some(b)) => format!("≤ {}", num(b)),
        (None, None) => String::new(),
    }
}

/// A number as Rust prints it: `1` rather than `1.0`, `0.5`.
fn num(x: f64) -> String {
    format!("{x}")
}
