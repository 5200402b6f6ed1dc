//! The cluster as an SVG picture that needs nothing but the rollcall binary:
//! hosts as boxes holding their services, data-flow edges as arrows between
//! services labelled with the topic (one arrow per pair of services; its
//! tooltip lists every topic and when a message last crossed). Where things
//! go is [`layout`](super::layout)'s: hosts in columns by data flow, arrows
//! routed between boxes, labels clear of boxes and of each other. An input
//! nothing feeds is drawn orange with a dangling stub and an `unfed` badge;
//! a stale arrow is red and dashed. There is no script, no external font or
//! stylesheet (presentation attributes only, a generic
//! `sans-serif`/`monospace` family), and text widths are estimated from
//! character counts.

use std::fmt::Write;

use rollcall_proto::Health;

use super::escape::{ago, duration, shorten, utc, xml};
use super::layout::{self, HOST_HEADER_H, HOST_PAD, Layout, MARGIN, Rect, TITLE_H};
use super::view::{Cluster, Flow, HostView, ServiceView, Status};

/// Characters that fit in a service box, and in a host's header.
const SVC_CHARS: usize = 30;
const HOST_CHARS: usize = 26;
/// A generous width per character of the 16 px bold title (0.6 em).
const TITLE_CHAR_W: f64 = 9.6;
/// The colours: an arrow, a stale arrow, an unfed input.
const EDGE: &str = "#1565c0";
const STALE: &str = "#c62828";
const UNFED: &str = "#e65100";

/// The SVG picture of `cluster`.
pub fn render(cluster: &Cluster) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = write_svg(&mut out, cluster);
    out
}

fn write_svg(out: &mut String, c: &Cluster) -> std::fmt::Result {
    let flows = c.flows();
    let mut l = layout::layout(c, &flows);
    let (online, offline, missing) = c.counts();
    let stale = flows.iter().filter(|f| f.stale()).count();
    let summary = format!(
        "rollcall cluster: {} hosts ({online} online, {offline} offline, {missing} missing), {} data-flow edges, {}",
        c.hosts.len(),
        c.edges.len(),
        utc(c.now_ms)
    );
    let title_w = 2.0 * MARGIN + summary.chars().count() as f64 * TITLE_CHAR_W;
    l.width = l.width.max(title_w).ceil();
    writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w:.0}\" height=\"{h:.0}\" \
         viewBox=\"0 0 {w:.0} {h:.0}\" font-family=\"sans-serif\" font-size=\"12\">",
        w = l.width,
        h = l.height.ceil()
    )?;
    writeln!(out, "<title>{}</title>", xml(&summary))?;
    writeln!(
        out,
        "<defs>{}{}</defs>",
        marker("arrow", EDGE),
        marker("arrow-stale", STALE)
    )?;
    writeln!(
        out,
        "<rect x=\"0\" y=\"0\" width=\"100%\" height=\"100%\" fill=\"#fafafa\"/>"
    )?;
    writeln!(
        out,
        "<text x=\"{MARGIN}\" y=\"{:.0}\" font-size=\"16\" font-weight=\"bold\" fill=\"#212121\">{}</text>",
        MARGIN + 14.0,
        xml(&summary)
    )?;
    write_legend(out, c, stale)?;
    if c.hosts.is_empty() {
        writeln!(
            out,
            "<text x=\"{MARGIN}\" y=\"{:.0}\" fill=\"#616161\">No host has answered or left its state on the broker.</text>",
            MARGIN + TITLE_H + 14.0
        )?;
    }
    for (h, r) in c.hosts.iter().zip(&l.hosts) {
        write_host(out, c, h, r, &l)?;
    }
    write_edges(out, c, &flows, &l)?;
    writeln!(out, "</svg>")?;
    Ok(())
}

fn marker(id: &str, colour: &str) -> String {
    format!(
        "<marker id=\"{id}\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" \
         markerWidth=\"8\" markerHeight=\"8\" orient=\"auto-start-reverse\">\
         <path d=\"M0,0 L10,5 L0,10 z\" fill=\"{colour}\"/></marker>"
    )
}

/// The line under the title: what the styles mean, and how many of each.
fn write_legend(out: &mut String, c: &Cluster, stale: usize) -> std::fmt::Result {
    let y = MARGIN + 36.0;
    let x = MARGIN;
    writeln!(
        out,
        "<g class=\"legend\" font-size=\"11\" fill=\"#424242\">"
    )?;
    writeln!(
        out,
        "<path d=\"M{x:.1},{y:.1} h28\" stroke=\"{EDGE}\" stroke-width=\"1.5\" marker-end=\"url(#arrow)\"/>\
         <text x=\"{:.1}\" y=\"{:.1}\">data flow</text>",
        x + 36.0,
        y + 4.0
    )?;
    let x = x + 110.0;
    writeln!(
        out,
        "<path d=\"M{x:.1},{y:.1} h28\" stroke=\"{STALE}\" stroke-width=\"1.5\" stroke-dasharray=\"6 4\" marker-end=\"url(#arrow-stale)\"/>\
         <text x=\"{:.1}\" y=\"{:.1}\">stale: no message for {} ({stale})</text>",
        x + 36.0,
        y + 4.0,
        duration(c.edge_stale_after_ms)
    )?;
    let x = x + 250.0;
    writeln!(
        out,
        "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"28\" height=\"12\" rx=\"3\" fill=\"#fff3e0\" stroke=\"{UNFED}\" stroke-width=\"2\"/>\
         <text x=\"{:.1}\" y=\"{:.1}\">unfed input: nothing writes it ({})</text>",
        y - 6.0,
        x + 36.0,
        y + 4.0,
        c.unfed.len()
    )?;
    writeln!(out, "</g>")
}

fn write_host(
    out: &mut String,
    c: &Cluster,
    h: &HostView,
    r: &Rect,
    l: &Layout,
) -> std::fmt::Result {
    let (stroke, dash, fill) = match h.status {
        Status::Online => ("#2e7d32", "", "#ffffff"),
        Status::Offline => ("#9e9e9e", " stroke-dasharray=\"6 4\"", "#eeeeee"),
        Status::Missing => ("#ef6c00", " stroke-dasharray=\"6 4\"", "#fff3e0"),
    };
    let seen = match h.last_seen_ms {
        Some(ms) if ms > 0 => format!("last seen {} ({})", utc(ms), ago(c.now_ms, ms)),
        _ => "never seen".to_owned(),
    };
    let ip = h.ipaddr.as_deref().unwrap_or("address unknown");
    writeln!(
        out,
        "<g class=\"host\" data-host=\"{}\" data-status=\"{}\">",
        xml(&h.name),
        h.status.as_str()
    )?;
    writeln!(
        out,
        "<title>{}</title>",
        xml(&format!("{} ({ip}), {}, {seen}", h.name, h.status.as_str()))
    )?;
    writeln!(
        out,
        "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" rx=\"8\" fill=\"{fill}\" stroke=\"{stroke}\" stroke-width=\"2\"{dash}/>",
        r.x, r.y, r.w, r.h
    )?;
    writeln!(
        out,
        "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"14\" font-weight=\"bold\" fill=\"#212121\">{}</text>",
        r.x + HOST_PAD,
        r.y + 20.0,
        xml(&shorten(&h.name, HOST_CHARS))
    )?;
    writeln!(
        out,
        "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" fill=\"{stroke}\">{}</text>",
        r.x + HOST_PAD,
        r.y + 36.0,
        xml(&shorten(
            &format!("{ip} · {}", h.status.as_str()),
            HOST_CHARS + 8
        ))
    )?;
    if h.services.is_empty() {
        writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" fill=\"#757575\">(no services)</text>",
            r.x + HOST_PAD,
            r.y + HOST_HEADER_H + 16.0
        )?;
    }
    for s in &h.services {
        if let Some(sr) = l.services.get(&(h.name.clone(), s.name.clone())) {
            write_service(out, c, h, s, r, sr)?;
        }
    }
    writeln!(out, "</g>")?;
    Ok(())
}

fn write_service(
    out: &mut String,
    c: &Cluster,
    h: &HostView,
    s: &ServiceView,
    host: &Rect,
    r: &Rect,
) -> std::fmt::Result {
    let unfed = c.unfed_of(&h.name, &s.name);
    let (mut stroke, mut fill, note) = match s.health() {
        Some(Health::Alert { reason }) => ("#c62828", "#ffebee", format!("alert: {reason}")),
        Some(Health::Ok) => ("#1565c0", "#e3f2fd", "ok".to_owned()),
        None => ("#1565c0", "#e3f2fd", "health not reported".to_owned()),
    };
    let mut width = "1";
    if !unfed.is_empty() && !matches!(s.health(), Some(Health::Alert { .. })) {
        (stroke, fill, width) = (UNFED, "#fff3e0", "2.5");
    }
    let dash = if s.present {
        ""
    } else {
        " stroke-dasharray=\"4 3\""
    };
    let doc = s
        .description
        .as_ref()
        .and_then(|d| d.doc.clone())
        .map(|d| format!(": {d}"))
        .unwrap_or_default();
    let presence = if s.present { "" } else { ", missing" };
    let unfed_note = if unfed.is_empty() {
        String::new()
    } else {
        format!("\nunfed input (nothing writes it): {}", unfed.join(", "))
    };
    writeln!(
        out,
        "<g class=\"service{}\" data-host=\"{}\" data-service=\"{}\"{}>",
        if unfed.is_empty() { "" } else { " unfed" },
        xml(&h.name),
        xml(&s.name),
        if unfed.is_empty() {
            String::new()
        } else {
            format!(" data-unfed=\"{}\"", unfed.len())
        }
    )?;
    writeln!(
        out,
        "<title>{}</title>",
        xml_lines(&format!(
            "{} on {}{doc} ({note}{presence}; {} topics){unfed_note}",
            s.name,
            h.name,
            s.interfaces().len()
        ))
    )?;
    writeln!(
        out,
        "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" rx=\"4\" fill=\"{fill}\" stroke=\"{stroke}\" stroke-width=\"{width}\"{dash}/>",
        r.x, r.y, r.w, r.h
    )?;
    let name_chars = if unfed.is_empty() {
        SVC_CHARS
    } else {
        SVC_CHARS - 9
    };
    writeln!(
        out,
        "<text x=\"{:.1}\" y=\"{:.1}\" font-family=\"monospace\" fill=\"#212121\">{}</text>",
        r.x + 8.0,
        r.y + 18.0,
        xml(&shorten(&s.name, name_chars))
    )?;
    if !unfed.is_empty() {
        // A stub from the host's edge to the input with nothing on its end,
        // and a badge: seen at a glance, without reading the tables.
        writeln!(
            out,
            "<path class=\"unfed-stub\" d=\"M{:.1},{:.1} H{:.1}\" stroke=\"{UNFED}\" stroke-width=\"2\" stroke-dasharray=\"3 2\"/>",
            host.x + 2.0,
            r.cy(),
            r.x - 1.0
        )?;
        writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" font-weight=\"bold\" fill=\"{UNFED}\">⚠ unfed</text>",
            r.right() - 58.0,
            r.y + 18.0
        )?;
    }
    writeln!(out, "</g>")?;
    Ok(())
}

fn write_edges(out: &mut String, c: &Cluster, flows: &[Flow<'_>], l: &Layout) -> std::fmt::Result {
    for route in &l.routes {
        let f = &flows[route.flow];
        let stale = f.stale();
        let (colour, dash, arrow, text_fill) = if stale {
            (STALE, " stroke-dasharray=\"6 4\"", "arrow-stale", STALE)
        } else {
            (EDGE, "", "arrow", "#0d47a1")
        };
        let last = match f.last_crossed_ms() {
            Some(ms) => format!("last message {} ({})", utc(ms), ago(c.now_ms, ms)),
            None => "no message seen".to_owned(),
        };
        let state = if stale {
            format!(
                "stale: no message for {}; {last}",
                duration(c.edge_stale_after_ms)
            )
        } else {
            last.clone()
        };
        writeln!(
            out,
            "<g class=\"edge{}\" data-from-host=\"{}\" data-from-service=\"{}\" data-to-host=\"{}\" data-to-service=\"{}\" data-topics=\"{}\"{}>",
            if stale { " stale" } else { "" },
            xml(f.from_host),
            xml(f.from_service),
            xml(f.to_host),
            xml(f.to_service),
            f.edges.len(),
            f.last_crossed_ms()
                .map(|ms| format!(" data-last-crossed-ms=\"{ms}\""))
                .unwrap_or_default()
        )?;
        writeln!(
            out,
            "<title>{}</title>",
            xml_lines(&format!("{}\n{state}", f.detail()))
        )?;
        let mut d = String::new();
        for (i, (x, y)) in route.points.iter().enumerate() {
            let _ = write!(d, "{}{x:.1},{y:.1}", if i == 0 { "M" } else { " L" });
        }
        writeln!(
            out,
            "<path d=\"{d}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\"{dash} marker-end=\"url(#{arrow})\"/>"
        )?;
        let b = &route.label_box;
        writeln!(
            out,
            "<text class=\"edge-label\" x=\"{:.1}\" y=\"{:.1}\" font-family=\"monospace\" font-size=\"10\" fill=\"{text_fill}\" stroke=\"#fafafa\" stroke-width=\"3\" paint-order=\"stroke\">{}</text>",
            b.x,
            b.y + b.h - 2.0,
            xml(&route.label)
        )?;
        writeln!(out, "</g>")?;
    }
    Ok(())
}

/// XML text keeping line breaks (a tooltip of several lines): each line
/// escaped on its own.
fn xml_lines(s: &str) -> String {
    s.lines().map(xml).collect::<Vec<_>>().join("\n")
}
