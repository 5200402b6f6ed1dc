//! The cluster as an SVG picture that needs nothing but the rollcall binary:
//! hosts as boxes holding their services, data-flow edges as arrows between
//! services labelled with the topic (one arrow per pair of services; its
//! tooltip lists every topic). The layout is computed here, a fixed
//! grid in host-name order, so the same cluster gives the same picture;
//! there is no script, no external font or stylesheet (presentation
//! attributes only, a generic `sans-serif`/`monospace` family), and text
//! widths are estimated from character counts.

use std::collections::BTreeMap;
use std::fmt::Write;

use rollcall_proto::Health;

use super::escape::{ago, shorten, utc, xml};
use super::view::{Cluster, HostView, ServiceView, Status};

const MARGIN: f64 = 24.0;
const TITLE_H: f64 = 44.0;
const HOST_W: f64 = 250.0;
const HOST_HEADER_H: f64 = 46.0;
const HOST_PAD: f64 = 12.0;
const SVC_H: f64 = 28.0;
const SVC_GAP: f64 = 8.0;
/// Room between columns for the arrows and their topic labels.
const COL_GAP: f64 = 170.0;
const ROW_GAP: f64 = 48.0;
/// Characters that fit in a service box, and in an edge label, at the sizes
/// used (about 7 px per character at 12 px).
const SVC_CHARS: usize = 30;
const HOST_CHARS: usize = 26;
const LABEL_CHARS: usize = 28;
/// A generous width per character of the 16 px bold title (0.6 em), and of
/// the 10 px monospace edge labels: the picture is made wide enough for
/// them, so that no text is cut off at its right edge.
const TITLE_CHAR_W: f64 = 9.6;
const LABEL_CHAR_W: f64 = 6.0;

/// Where one service's box is.
#[derive(Debug, Clone, Copy)]
struct Rect {
    x: f64,
    y: f64,
    w: f64,
    h: f64,
}

impl Rect {
    fn cx(&self) -> f64 {
        self.x + self.w / 2.0
    }
    fn cy(&self) -> f64 {
        self.y + self.h / 2.0
    }
    fn right(&self) -> f64 {
        self.x + self.w
    }
}

/// Hosts in a grid of about as many columns as rows, never more than the
/// hosts: a few hosts sit in one row, a thousand in a square.
fn columns(hosts: usize) -> usize {
    let square = (hosts as f64).sqrt().ceil() as usize;
    hosts.min(square.max(4)).max(1)
}

fn host_height(h: &HostView) -> f64 {
    let n = h.services.len().max(1) as f64;
    HOST_HEADER_H + n * (SVC_H + SVC_GAP) - SVC_GAP + HOST_PAD
}

struct Layout {
    hosts: Vec<Rect>,
    services: BTreeMap<(String, String), Rect>,
    width: f64,
    height: f64,
}

fn layout(c: &Cluster) -> Layout {
    let cols = columns(c.hosts.len());
    let mut hosts = Vec::with_capacity(c.hosts.len());
    let mut services = BTreeMap::new();
    let mut y = MARGIN + TITLE_H;
    for row in c.hosts.chunks(cols) {
        let row_h = row.iter().map(host_height).fold(0.0, f64::max);
        for (i, h) in row.iter().enumerate() {
            let x = MARGIN + i as f64 * (HOST_W + COL_GAP);
            let r = Rect {
                x,
                y,
                w: HOST_W,
                h: host_height(h),
            };
            for (j, s) in h.services.iter().enumerate() {
                services.insert(
                    (h.name.clone(), s.name.clone()),
                    Rect {
                        x: x + HOST_PAD,
                        y: y + HOST_HEADER_H + j as f64 * (SVC_H + SVC_GAP),
                        w: HOST_W - 2.0 * HOST_PAD,
                        h: SVC_H,
                    },
                );
            }
            hosts.push(r);
        }
        y += row_h + ROW_GAP;
    }
    let used_cols = cols.min(c.hosts.len()).max(1) as f64;
    let width = 2.0 * MARGIN + used_cols * HOST_W + (used_cols - 1.0) * COL_GAP;
    Layout {
        hosts,
        services,
        width: width.max(480.0),
        height: (y - ROW_GAP + MARGIN).max(MARGIN + TITLE_H + 40.0),
    }
}

/// The SVG picture of `cluster`.
pub fn render(cluster: &Cluster) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = write_svg(&mut out, cluster);
    out
}

/// How wide the picture must be for what it draws beyond the grid: the
/// title line, and arrows between services of one column, which bow out to
/// the right of it (the last column's past the grid), with their labels.
fn needed_width(c: &Cluster, l: &Layout, title: &str) -> f64 {
    let title_w = 2.0 * MARGIN + title.chars().count() as f64 * TITLE_CHAR_W;
    let edges_w = c
        .flows()
        .iter()
        .filter_map(|f| {
            let a = l
                .services
                .get(&(f.from_host.to_owned(), f.from_service.to_owned()))?;
            let b = l
                .services
                .get(&(f.to_host.to_owned(), f.to_service.to_owned()))?;
            let (_, (mx, _)) = edge_path(a, b);
            let label = shorten(&f.label(), LABEL_CHARS).chars().count() as f64;
            Some(mx.max(a.right()).max(b.right()) + label * LABEL_CHAR_W / 2.0 + MARGIN)
        })
        .fold(0.0, f64::max);
    title_w.max(edges_w)
}

fn write_svg(out: &mut String, c: &Cluster) -> std::fmt::Result {
    let mut l = layout(c);
    let (online, offline, missing) = c.counts();
    let summary = format!(
        "rollcall cluster: {} hosts ({online} online, {offline} offline, {missing} missing), {} data-flow edges, {}",
        c.hosts.len(),
        c.edges.len(),
        utc(c.now_ms)
    );
    l.width = l.width.max(needed_width(c, &l, &summary)).ceil();
    writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w:.0}\" height=\"{h:.0}\" \
         viewBox=\"0 0 {w:.0} {h:.0}\" font-family=\"sans-serif\" font-size=\"12\">",
        w = l.width,
        h = l.height
    )?;
    writeln!(out, "<title>{}</title>", xml(&summary))?;
    writeln!(
        out,
        "<defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" \
         markerWidth=\"8\" markerHeight=\"8\" orient=\"auto-start-reverse\">\
         <path d=\"M0,0 L10,5 L0,10 z\" fill=\"#1565c0\"/></marker></defs>"
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
    write_edges(out, c, &l)?;
    writeln!(out, "</svg>")?;
    Ok(())
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
            write_service(out, h, s, sr)?;
        }
    }
    writeln!(out, "</g>")?;
    Ok(())
}

fn write_service(out: &mut String, h: &HostView, s: &ServiceView, r: &Rect) -> std::fmt::Result {
    let (stroke, fill, note) = match s.health() {
        Some(Health::Alert { reason }) => ("#c62828", "#ffebee", format!("alert: {reason}")),
        Some(Health::Ok) => ("#1565c0", "#e3f2fd", "ok".to_owned()),
        None => ("#1565c0", "#e3f2fd", "health not reported".to_owned()),
    };
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
    writeln!(
        out,
        "<g class=\"service\" data-host=\"{}\" data-service=\"{}\">",
        xml(&h.name),
        xml(&s.name)
    )?;
    writeln!(
        out,
        "<title>{}</title>",
        xml(&format!(
            "{} on {}{doc} ({note}{presence}; {} topics)",
            s.name,
            h.name,
            s.interfaces().len()
        ))
    )?;
    writeln!(
        out,
        "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" rx=\"4\" fill=\"{fill}\" stroke=\"{stroke}\"{dash}/>",
        r.x, r.y, r.w, r.h
    )?;
    writeln!(
        out,
        "<text x=\"{:.1}\" y=\"{:.1}\" font-family=\"monospace\" fill=\"#212121\">{}</text>",
        r.x + 8.0,
        r.y + 18.0,
        xml(&shorten(&s.name, SVC_CHARS))
    )?;
    writeln!(out, "</g>")?;
    Ok(())
}

/// How far an arrow between columns bends: rightwards arrows up, leftwards
/// ones down, so that A → B and B → A (a control loop) are two curves with
/// two readable labels rather than one.
const BOW: f64 = 14.0;

/// One arrow: a cubic curve from the side of the source facing the target to
/// the side of the target facing the source; between services of one
/// column, a bow out to the right, wider the further apart they are.
fn edge_path(a: &Rect, b: &Rect) -> (String, (f64, f64)) {
    let (p0, c0, c1, p3) = if b.cx() > a.right() {
        let (x0, x3) = (a.right(), b.x);
        let d = ((x3 - x0) / 2.0).max(40.0);
        (
            (x0, a.cy()),
            (x0 + d, a.cy() - BOW),
            (x3 - d, b.cy() - BOW),
            (x3, b.cy()),
        )
    } else if b.right() < a.x {
        let (x0, x3) = (a.x, b.right());
        let d = ((x0 - x3) / 2.0).max(40.0);
        (
            (x0, a.cy()),
            (x0 - d, a.cy() + BOW),
            (x3 + d, b.cy() + BOW),
            (x3, b.cy()),
        )
    } else {
        // Same column (or the same service): out of the right side and back.
        let (x0, x3) = (a.right(), b.right());
        let bow = 50.0 + (a.cy() - b.cy()).abs() / 6.0;
        let (y0, y3) = if (a.cy() - b.cy()).abs() < 1.0 {
            (a.cy() - 6.0, b.cy() + 6.0)
        } else {
            (a.cy(), b.cy())
        };
        ((x0, y0), (x0 + bow, y0), (x3 + bow, y3), (x3, y3))
    };
    let d = format!(
        "M{:.1},{:.1} C{:.1},{:.1} {:.1},{:.1} {:.1},{:.1}",
        p0.0, p0.1, c0.0, c0.1, c1.0, c1.1, p3.0, p3.1
    );
    // The curve's point at t = 1/2.
    let mid = (
        (p0.0 + 3.0 * c0.0 + 3.0 * c1.0 + p3.0) / 8.0,
        (p0.1 + 3.0 * c0.1 + 3.0 * c1.1 + p3.1) / 8.0,
    );
    (d, mid)
}

fn write_edges(out: &mut String, c: &Cluster, l: &Layout) -> std::fmt::Result {
    for f in c.flows() {
        let from = l
            .services
            .get(&(f.from_host.to_owned(), f.from_service.to_owned()));
        let to = l
            .services
            .get(&(f.to_host.to_owned(), f.to_service.to_owned()));
        let (Some(a), Some(b)) = (from, to) else {
            continue;
        };
        let (d, (mx, my)) = edge_path(a, b);
        writeln!(
            out,
            "<g class=\"edge\" data-from-host=\"{}\" data-from-service=\"{}\" data-to-host=\"{}\" data-to-service=\"{}\" data-topics=\"{}\">",
            xml(f.from_host),
            xml(f.from_service),
            xml(f.to_host),
            xml(f.to_service),
            f.edges.len()
        )?;
        writeln!(out, "<title>{}</title>", xml_lines(&f.detail()))?;
        writeln!(
            out,
            "<path d=\"{d}\" fill=\"none\" stroke=\"#1565c0\" stroke-width=\"1.5\" marker-end=\"url(#arrow)\"/>"
        )?;
        writeln!(
            out,
            "<text x=\"{mx:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-family=\"monospace\" font-size=\"10\" fill=\"#0d47a1\" stroke=\"#fafafa\" stroke-width=\"3\" paint-order=\"stroke\">{}</text>",
            my - 4.0,
            xml(&shorten(&f.label(), LABEL_CHARS))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_few_hosts_sit_in_one_row_many_in_a_square() {
        assert_eq!(columns(0), 1);
        assert_eq!(columns(3), 3);
        assert_eq!(columns(4), 4);
        assert_eq!(columns(10), 4);
        assert_eq!(columns(1000), 32);
    }

    #[test]
    fn arrows_leave_the_side_facing_their_target() {
        let a = Rect {
            x: 0.0,
            y: 0.0,
            w: 100.0,
            h: 20.0,
        };
        let right = Rect { x: 300.0, ..a };
        let (d, mid) = edge_path(&a, &right);
        assert!(d.starts_with("M100.0,10.0 "), "{d}");
        assert!(d.ends_with(" 300.0,10.0"), "{d}");
        assert_eq!(mid.0, 200.0);
        assert!(mid.1 < 10.0, "rightwards arrows bend up: {mid:?}");
        let (d, back) = edge_path(&right, &a);
        assert!(
            d.starts_with("M300.0,10.0 ") && d.ends_with(" 100.0,10.0"),
            "{d}"
        );
        assert!(back.1 > 10.0, "leftwards arrows bend down: {back:?}");
        // Same column: out of the right side and back in on the right.
        let below = Rect { y: 60.0, ..a };
        let (d, mid) = edge_path(&a, &below);
        assert!(
            d.starts_with("M100.0,10.0 ") && d.ends_with(" 100.0,70.0"),
            "{d}"
        );
        assert!(mid.0 > 100.0);
    }
}
