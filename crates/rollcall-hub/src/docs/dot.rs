//! The cluster as Graphviz DOT: a `digraph` with one cluster subgraph per
//! host holding its services, and one edge per pair of services that data
//! flows between, labelled with the topic (or how many; the tooltip lists
//! them all). For people who have Graphviz (`dot -Tpng cluster.dot`); the SVG
//! output needs nothing.

use std::collections::BTreeMap;
use std::fmt::Write;

use rollcall_proto::Health;

use super::escape::dot_quote;
use super::view::{Cluster, Status};

/// The DOT source for `cluster`.
pub fn render(cluster: &Cluster) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = write_graph(&mut out, cluster);
    out
}

/// Node ids are `host/service`, quoted; where two pairs give the same id
/// (names from foreign programs may contain `/`) the later one gets `#n`.
fn node_ids(c: &Cluster) -> BTreeMap<(&str, &str), String> {
    let mut ids = BTreeMap::new();
    let mut taken = std::collections::BTreeSet::new();
    for (h, s) in c.services() {
        let base = format!("{}/{}", h.name, s.name);
        let mut id = base.clone();
        let mut n = 2;
        while !taken.insert(id.clone()) {
            id = format!("{base}#{n}");
            n += 1;
        }
        ids.insert((h.name.as_str(), s.name.as_str()), id);
    }
    ids
}

fn write_graph(out: &mut String, c: &Cluster) -> std::fmt::Result {
    let (online, offline, missing) = c.counts();
    writeln!(out, "digraph rollcall {{")?;
    writeln!(
        out,
        "  graph [rankdir=LR, fontname=\"Helvetica\", fontsize=12, labelloc=t, label={}];",
        dot_quote(&format!(
            "rollcall cluster: {} hosts ({online} online, {offline} offline, {missing} missing), {} data-flow edges",
            c.hosts.len(),
            c.edges.len()
        ))
    )?;
    writeln!(
        out,
        "  node [shape=box, style=\"rounded,filled\", fillcolor=\"#ffffff\", fontname=\"Helvetica\", fontsize=11];"
    )?;
    writeln!(out, "  edge [fontname=\"Helvetica\", fontsize=9];")?;
    let ids = node_ids(c);
    for (n, h) in c.hosts.iter().enumerate() {
        writeln!(out)?;
        writeln!(out, "  subgraph \"cluster_{n}\" {{")?;
        let mut label = h.name.clone();
        if let Some(ip) = &h.ipaddr {
            label.push_str(&format!(" ({ip})"));
        }
        label.push_str(&format!(" {}", h.status.as_str()));
        writeln!(out, "    label={};", dot_quote(&label))?;
        let (style, color) = match h.status {
            Status::Online => ("rounded", "#2e7d32"),
            Status::Offline => ("rounded,dashed", "#9e9e9e"),
            Status::Missing => ("rounded,dashed", "#ef6c00"),
        };
        writeln!(out, "    style=\"{style}\"; color=\"{color}\";")?;
        if h.services.is_empty() {
            // An empty cluster subgraph is not drawn at all; keep the host visible.
            writeln!(
                out,
                "    {} [label=\"(no services)\", shape=plaintext, style=\"\"];",
                dot_quote(&format!("{}/", h.name))
            )?;
        }
        for s in &h.services {
            let id = &ids[&(h.name.as_str(), s.name.as_str())];
            let mut attrs = vec![format!("label={}", dot_quote(&s.name))];
            match s.health() {
                Some(Health::Alert { reason }) => {
                    attrs.push("color=\"#c62828\"".into());
                    attrs.push(format!(
                        "tooltip={}",
                        dot_quote(&format!("alert: {reason}"))
                    ));
                }
                _ if !s.present => attrs.push("style=\"rounded,dashed\"".into()),
                _ => {}
            }
            // An input nothing feeds: orange and bold, as in the SVG.
            let unfed = c.unfed_of(&h.name, &s.name);
            if !unfed.is_empty() {
                attrs[0] = format!("label={}", dot_quote(&format!("{} (unfed)", s.name)));
                attrs.push("penwidth=2".into());
                // An alert keeps its red and its tooltip.
                if !attrs.iter().any(|a| a.starts_with("tooltip=")) {
                    attrs.push("color=\"#e65100\"".into());
                    attrs.push(format!(
                        "tooltip={}",
                        dot_quote(&format!("unfed: {}", unfed.join(", ")))
                    ));
                }
            }
            writeln!(out, "    {} [{}];", dot_quote(id), attrs.join(", "))?;
        }
        writeln!(out, "  }}")?;
    }
    let flows = c.flows();
    if !flows.is_empty() {
        writeln!(out)?;
    }
    for f in flows {
        let (Some(from), Some(to)) = (
            ids.get(&(f.from_host, f.from_service)),
            ids.get(&(f.to_host, f.to_service)),
        ) else {
            continue;
        };
        // A stale flow: dashed and red, as in the SVG.
        let stale = if f.stale() {
            ", style=dashed, color=\"#c62828\", fontcolor=\"#c62828\""
        } else {
            ""
        };
        writeln!(
            out,
            "  {} -> {} [label={}, tooltip={}{stale}];",
            dot_quote(from),
            dot_quote(to),
            dot_quote(&f.label()),
            dot_quote(&f.detail().replace('\n', "; "))
        )?;
    }
    writeln!(out, "}}")?;
    Ok(())
}
