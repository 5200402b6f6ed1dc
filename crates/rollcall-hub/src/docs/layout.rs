//! Where the SVG picture puts things: hosts in columns by data flow, arrows
//! routed in the gaps between boxes, labels in free space. Pure geometry
//! from a [`Cluster`], so the same cluster always gives the same picture.
//!
//! - **Layers.** Hosts are layered by the data flowing between them
//!   (longest path from the hosts nothing flows into, cycles broken at the
//!   edges a depth-first search finds going back), so most arrows point
//!   right and are short. A layer taller than [`column_cap`] hosts is split
//!   into several columns; hosts with no flow fill the shortest columns.
//!   Hosts within a column are ordered by the barycentre of their
//!   neighbours in the next column, sweeping back and forth, to cut crossings.
//! - **Channels.** Between two columns (and at either side) runs a vertical
//!   channel no box is in. An arrow leaves its service on the side facing
//!   its target, runs vertically in a channel on a track of its own, passes
//!   through a column it must cross in a gap between two of its hosts, and
//!   enters its target service from the side facing its source. So a
//!   segment crosses no box but its own host's and its target host's
//!   margins.
//! - **Labels.** Each arrow's label sits in the channel beside its target
//!   host, above (or, when taken, below, then further off) the segment
//!   entering the target, in a zone of the channel kept for labels: labels
//!   never overlap a box, and never each other.

use std::collections::{BTreeMap, HashMap};

use super::escape::shorten;
use super::view::{Cluster, Flow, HostView};

pub(super) const MARGIN: f64 = 24.0;
/// The title line and the legend under it.
pub(super) const TITLE_H: f64 = 62.0;
pub(super) const HOST_W: f64 = 250.0;
pub(super) const HOST_HEADER_H: f64 = 46.0;
pub(super) const HOST_PAD: f64 = 12.0;
pub(super) const SVC_H: f64 = 28.0;
pub(super) const SVC_GAP: f64 = 8.0;
/// The gap between two hosts of a column (arrows cross the column here).
const ROW_GAP: f64 = 40.0;
/// The distance between two parallel arrows in a channel or a gap.
const TRACK_GAP: f64 = 7.0;
/// The narrowest channel between two columns.
const MIN_CHANNEL: f64 = 36.0;
/// Characters of an arrow's label, and its width per character (10 px
/// monospace is 0.6 em), its height, and its room from boxes and lines.
pub(super) const LABEL_CHARS: usize = 28;
pub(super) const LABEL_CHAR_W: f64 = 6.0;
pub(super) const LABEL_H: f64 = 11.0;
const LABEL_PAD: f64 = 6.0;

/// A box: where a host or a service is drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Rect {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
}

impl Rect {
    pub fn cy(&self) -> f64 {
        self.y + self.h / 2.0
    }
    pub fn right(&self) -> f64 {
        self.x + self.w
    }
}

/// One arrow: its points (an orthogonal polyline, ending at the target) and
/// its label's text and box.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Route {
    /// Index into [`Cluster::flows`].
    pub flow: usize,
    pub points: Vec<(f64, f64)>,
    pub label: String,
    /// The label's box; the text's baseline is 2 px above its bottom.
    pub label_box: Rect,
}

/// The whole picture's geometry.
#[derive(Debug, Clone)]
pub(super) struct Layout {
    /// The hosts' boxes, in `Cluster::hosts` order.
    pub hosts: Vec<Rect>,
    pub services: BTreeMap<(String, String), Rect>,
    pub routes: Vec<Route>,
    pub width: f64,
    pub height: f64,
}

/// The most hosts in one column: about as many as make the picture as
/// tall as it is wide when every host is in its own layer's columns (a
/// column and its channel are about 3.5 times as wide as a host of two
/// services is tall): four for a few hosts, 14 for fifty, 60 for a thousand.
pub(super) fn column_cap(hosts: usize) -> usize {
    ((hosts as f64 * 3.5).sqrt().ceil() as usize).max(4)
}

pub(super) fn host_height(h: &HostView) -> f64 {
    let n = h.services.len().max(1) as f64;
    HOST_HEADER_H + n * (SVC_H + SVC_GAP) - SVC_GAP + HOST_PAD
}

/// Layers of the hosts by data flow (`edges` between host indexes, no self
/// loops): each host one past the furthest host flowing into it, along
/// edges that do not close a cycle. Hosts with no edge are `None`.
pub(super) fn layers(n: usize, edges: &[(usize, usize)]) -> Vec<Option<usize>> {
    let mut out_adj: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut linked = vec![false; n];
    for &(a, b) in edges {
        out_adj[a].push(b);
        linked[a] = true;
        linked[b] = true;
    }
    for adj in &mut out_adj {
        adj.sort_unstable();
        adj.dedup();
    }
    // Depth-first, from hosts in order: an edge to a host still on the
    // stack closes a cycle and is left out of the layering.
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnStack,
        Done,
    }
    let mut mark = vec![Mark::New; n];
    let mut kept: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut order = Vec::with_capacity(n);
    // Sources first, so that a cycle is broken at the edge that goes back
    // towards them, not at one that goes with the flow.
    let mut fed = vec![false; n];
    for &(_, b) in edges {
        fed[b] = true;
    }
    let roots: Vec<usize> = (0..n)
        .filter(|&i| !fed[i])
        .chain((0..n).filter(|&i| fed[i]))
        .collect();
    for root in roots {
        if mark[root] != Mark::New {
            continue;
        }
        let mut stack = vec![(root, 0usize)];
        mark[root] = Mark::OnStack;
        while let Some((v, i)) = stack.pop() {
            if let Some(&w) = out_adj[v].get(i) {
                stack.push((v, i + 1));
                match mark[w] {
                    Mark::OnStack => {}
                    Mark::Done => kept[v].push(w),
                    Mark::New => {
                        kept[v].push(w);
                        mark[w] = Mark::OnStack;
                        stack.push((w, 0));
                    }
                }
            } else {
                mark[v] = Mark::Done;
                order.push(v);
            }
        }
    }
    // `order` is a post-order: reversed, every kept edge points forward.
    let mut layer = vec![0usize; n];
    for &v in order.iter().rev() {
        for &w in &kept[v] {
            layer[w] = layer[w].max(layer[v] + 1);
        }
    }
    (0..n).map(|i| linked[i].then_some(layer[i])).collect()
}

/// Columns of host indexes, top to bottom: layers split at `cap`, ordered
/// by barycentres, then hosts without flow in the shortest columns.
fn columns(c: &Cluster, edges: &[(usize, usize)]) -> Vec<Vec<usize>> {
    let n = c.hosts.len();
    let cap = column_cap(n);
    let layer = layers(n, edges);
    let depth = layer.iter().flatten().max().map_or(0, |d| d + 1);
    let mut by_layer: Vec<Vec<usize>> = vec![Vec::new(); depth];
    for (i, l) in layer.iter().enumerate() {
        if let Some(l) = l {
            by_layer[*l].push(i);
        }
    }
    // Ordered within layers first, then a layer too tall for one column
    // dealt out over several, so each spans the layer's whole order and
    // stays level with what it feeds.
    order_by_barycentre(&mut by_layer, edges, n);
    let mut cols: Vec<Vec<usize>> = Vec::new();
    for hosts in by_layer {
        let m = hosts.len().div_ceil(cap).max(1);
        let first = cols.len();
        cols.extend(std::iter::repeat_with(Vec::new).take(m));
        for (i, h) in hosts.into_iter().enumerate() {
            cols[first + i % m].push(h);
        }
    }
    order_by_barycentre(&mut cols, edges, n);
    // Hosts without flow: in the column with the fewest hosts, a new one
    // once every column is full.
    for (i, _) in layer.iter().enumerate().filter(|(_, l)| l.is_none()) {
        let shortest = (0..cols.len()).min_by_key(|k| (cols[*k].len(), *k));
        match shortest {
            Some(k) if cols[k].len() < cap => cols[k].push(i),
            _ => cols.push(vec![i]),
        }
    }
    cols
}

/// Reorders each column by the mean position of its hosts' neighbours in
/// the column before (sweeping right), then after (sweeping left), a few
/// times: fewer arrows cross one another.
fn order_by_barycentre(cols: &mut [Vec<usize>], edges: &[(usize, usize)], n: usize) {
    let mut neighbours: Vec<Vec<usize>> = vec![Vec::new(); n];
    for &(a, b) in edges {
        neighbours[a].push(b);
        neighbours[b].push(a);
    }
    let mut pos = vec![0.0f64; n];
    let mut col_of = vec![usize::MAX; n];
    for (k, col) in cols.iter().enumerate() {
        for (i, &h) in col.iter().enumerate() {
            pos[h] = i as f64;
            col_of[h] = k;
        }
    }
    for sweep in 0..4 {
        let forward = sweep % 2 == 0;
        let ks: Vec<usize> = if forward {
            (1..cols.len()).collect()
        } else {
            (0..cols.len().saturating_sub(1)).rev().collect()
        };
        for k in ks {
            let fixed = if forward { k - 1 } else { k + 1 };
            let key = |h: usize| {
                let ps: Vec<f64> = neighbours[h]
                    .iter()
                    .filter(|&&x| col_of[x] == fixed)
                    .map(|&x| pos[x])
                    .collect();
                if ps.is_empty() {
                    pos[h]
                } else {
                    ps.iter().sum::<f64>() / ps.len() as f64
                }
            };
            let mut keyed: Vec<(f64, usize, usize)> = cols[k]
                .iter()
                .map(|&h| (key(h), pos[h] as usize, h))
                .collect();
            keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            cols[k] = keyed.into_iter().map(|(_, _, h)| h).collect();
            for (i, &h) in cols[k].iter().enumerate() {
                pos[h] = i as f64;
            }
        }
    }
}

/// Which side of a box an arrow leaves or enters by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Side {
    Left,
    Right,
}

/// An arrow before its x coordinates are known.
struct Draft {
    flow: usize,
    from: (usize, usize, f64),
    to: (usize, usize, f64),
    exit: Side,
    entry: Side,
    /// The channels it runs in, in order, each from one y to another; the
    /// `y` it passes a column at is the next run's start.
    runs: Vec<(usize, f64, f64)>,
    /// The zone its label goes in, and the label's top.
    zone: (usize, Side),
    label: String,
    label_top: f64,
}

/// A flow's two ends: (host index, service row) of its publisher, then of
/// its consumer.
type Ends = ((usize, usize), (usize, usize));

/// The picture's layout for `c`, with `flows = c.flows()`.
pub(super) fn layout(c: &Cluster, flows: &[Flow<'_>]) -> Layout {
    let index: HashMap<&str, usize> = c
        .hosts
        .iter()
        .enumerate()
        .map(|(i, h)| (h.name.as_str(), i))
        .collect();
    let service_row = |host: usize, service: &str| {
        c.hosts[host]
            .services
            .iter()
            .position(|s| s.name == service)
    };
    // The flows drawn: both ends known.
    let ends: Vec<Option<Ends>> = flows
        .iter()
        .map(|f| {
            let a = *index.get(f.from_host)?;
            let b = *index.get(f.to_host)?;
            Some((
                (a, service_row(a, f.from_service)?),
                (b, service_row(b, f.to_service)?),
            ))
        })
        .collect();
    let mut host_edges: Vec<(usize, usize)> = ends
        .iter()
        .flatten()
        .filter(|((a, _), (b, _))| a != b)
        .map(|((a, _), (b, _))| (*a, *b))
        .collect();
    host_edges.sort_unstable();
    host_edges.dedup();
    let cols = columns(c, &host_edges);

    // Heights first: where each host is in its column, and the gaps.
    let top = MARGIN + TITLE_H;
    let mut col_of = vec![0usize; c.hosts.len()];
    let mut host_y = vec![0.0f64; c.hosts.len()];
    let mut gaps: Vec<Vec<(f64, f64)>> = Vec::with_capacity(cols.len());
    let mut bottom = top;
    for (k, col) in cols.iter().enumerate() {
        let mut y = top + ROW_GAP;
        let mut g = vec![(top, y)];
        for &h in col {
            col_of[h] = k;
            host_y[h] = y;
            y += host_height(&c.hosts[h]);
            g.push((y, y + ROW_GAP));
            y += ROW_GAP;
        }
        bottom = bottom.max(y);
        gaps.push(g);
    }
    let svc_cy = |h: usize, row: usize| {
        host_y[h] + HOST_HEADER_H + row as f64 * (SVC_H + SVC_GAP) + SVC_H / 2.0
    };

    // Arrows entering one side of one service come in at different heights,
    // each with its own segment to carry its label.
    let entry_of = |a: usize, b: usize| {
        if col_of[b] > col_of[a] {
            Side::Left
        } else {
            Side::Right
        }
    };
    let mut entering: HashMap<(usize, usize, Side), usize> = HashMap::new();
    for ((a, _), (b, rb)) in ends.iter().flatten() {
        *entering.entry((*b, *rb, entry_of(*a, *b))).or_default() += 1;
    }
    let mut entered: HashMap<(usize, usize, Side), usize> = HashMap::new();

    // Runs through channels: channel k is left of column k.
    let mut gap_use: HashMap<(usize, usize), usize> = HashMap::new();
    let mut drafts: Vec<Draft> = Vec::new();
    for (fi, e) in ends.iter().enumerate() {
        let Some(((a, ra), (b, rb))) = *e else {
            continue;
        };
        let (ca, cb) = (col_of[a], col_of[b]);
        let key = (b, rb, entry_of(a, b));
        let k = entering[&key] as f64;
        let i = *entered.entry(key).and_modify(|i| *i += 1).or_insert(0) as f64;
        let (ya, yb) = (
            svc_cy(a, ra),
            svc_cy(b, rb) - SVC_H / 2.0 + 4.0 + (SVC_H - 8.0) * (i + 1.0) / (k + 1.0),
        );
        let (exit, entry, channels, crossed): (Side, Side, Vec<usize>, Vec<usize>) = if cb > ca {
            (
                Side::Right,
                Side::Left,
                (ca + 1..=cb).collect(),
                (ca + 1..cb).collect(),
            )
        } else if cb < ca {
            (
                Side::Left,
                Side::Right,
                (cb + 1..=ca).rev().collect(),
                (cb + 1..ca).rev().collect(),
            )
        } else {
            (Side::Right, Side::Right, vec![ca + 1], Vec::new())
        };
        let mut runs = Vec::new();
        let mut y = ya;
        for (i, &ch) in channels.iter().enumerate() {
            let next = match crossed.get(i) {
                None => yb,
                Some(&k) => {
                    // The gap of column k nearest the way from here to the target.
                    let (gi, (g0, g1)) = gaps[k]
                        .iter()
                        .copied()
                        .enumerate()
                        .min_by(|(_, p), (_, q)| {
                            let cost = |g: &(f64, f64)| {
                                let mid = (g.0 + g.1) / 2.0;
                                (mid - y).abs() + (mid - yb).abs()
                            };
                            cost(p).total_cmp(&cost(q))
                        })
                        .unwrap_or((0, (top, top + ROW_GAP)));
                    let slots =
                        (((g1 - g0) - 2.0 * TRACK_GAP) / TRACK_GAP).floor().max(1.0) as usize;
                    let used = gap_use.entry((k, gi)).or_insert(0);
                    let slot = *used % slots;
                    *used += 1;
                    g0 + TRACK_GAP * (slot as f64 + 1.5)
                }
            };
            runs.push((ch, y, next));
            y = next;
        }
        let zone = match entry {
            Side::Left => (cb, Side::Left),
            Side::Right => (cb + 1, Side::Right),
        };
        drafts.push(Draft {
            flow: fi,
            from: (a, ra, ya),
            to: (b, rb, yb),
            exit,
            entry,
            runs,
            zone,
            label: shorten(&flows[fi].label(), LABEL_CHARS),
            label_top: 0.0,
        });
    }

    // Tracks: in each channel, vertical runs that overlap get their own.
    let n_channels = cols.len() + 1;
    let mut tracks: HashMap<(usize, usize), usize> = HashMap::new();
    let mut n_tracks = vec![0usize; n_channels];
    {
        let mut runs: Vec<(usize, f64, f64, usize, usize)> = Vec::new();
        for (d, draft) in drafts.iter().enumerate() {
            for (r, &(ch, y0, y1)) in draft.runs.iter().enumerate() {
                runs.push((ch, y0.min(y1), y0.max(y1), d, r));
            }
        }
        runs.sort_by(|p, q| p.0.cmp(&q.0).then(p.1.total_cmp(&q.1)));
        let mut ends_at: Vec<Vec<f64>> = vec![Vec::new(); n_channels];
        for (ch, lo, hi, d, r) in runs {
            let free = ends_at[ch].iter().position(|end| *end + TRACK_GAP < lo);
            let t = match free {
                Some(t) => {
                    ends_at[ch][t] = hi;
                    t
                }
                None => {
                    ends_at[ch].push(hi);
                    ends_at[ch].len() - 1
                }
            };
            tracks.insert((d, r), t);
            n_tracks[ch] = n_tracks[ch].max(t + 1);
        }
    }

    // Labels: in their zone, above the entering segment if free, else below,
    // else further off; never over another label of the zone.
    let mut zone_w: HashMap<(usize, Side), f64> = HashMap::new();
    let mut taken: HashMap<(usize, Side), Vec<f64>> = HashMap::new();
    let mut order: Vec<usize> = (0..drafts.len()).collect();
    order.sort_by(|&p, &q| drafts[p].to.2.total_cmp(&drafts[q].to.2));
    for d in order {
        let draft = &mut drafts[d];
        let w = draft.label.chars().count() as f64 * LABEL_CHAR_W;
        let zw = zone_w.entry(draft.zone).or_insert(0.0);
        *zw = zw.max(w + 2.0 * LABEL_PAD);
        let used = taken.entry(draft.zone).or_default();
        let y = draft.to.2;
        let step = LABEL_H + 2.0;
        let top = (0..)
            .map(|i: usize| {
                let k = (i / 2) as f64;
                if i.is_multiple_of(2) {
                    y - 2.0 - LABEL_H - k * step
                } else {
                    y + 2.0 + k * step
                }
            })
            .find(|t| {
                // Labels are all as tall: one overlaps another whose top is
                // within a label's height (and 1 px) of its own. The tops are
                // kept sorted, so a thousand labels in one zone (a logger on
                // `/+/system/#`) cost a search each, not a scan.
                let first = used.partition_point(|u| *u <= *t - LABEL_H - 1.0);
                *t >= MARGIN + TITLE_H && used.get(first).is_none_or(|u| *u >= *t + LABEL_H + 1.0)
            })
            .unwrap_or(y);
        let at = used.partition_point(|u| *u < top);
        used.insert(at, top);
        draft.label_top = top;
        bottom = bottom.max(top + LABEL_H + ROW_GAP);
    }

    // Now the widths: each channel holds the labels of the column on its
    // left, its tracks, and the labels of the column on its right.
    let mut channel_x = vec![0.0f64; n_channels];
    let mut col_x = vec![0.0f64; cols.len()];
    let zone = |ch: usize, side: Side| zone_w.get(&(ch, side)).copied().unwrap_or(0.0);
    let tracks_w = |ch: usize| (n_tracks[ch] + 1) as f64 * TRACK_GAP;
    let channel_w = |ch: usize| {
        let used = n_tracks[ch] > 0 || zone(ch, Side::Left) > 0.0 || zone(ch, Side::Right) > 0.0;
        let inner = ch > 0 && ch < cols.len();
        let w = zone(ch, Side::Right) + tracks_w(ch) + zone(ch, Side::Left);
        if inner {
            w.max(MIN_CHANNEL)
        } else if used {
            w
        } else {
            0.0
        }
    };
    let mut x = MARGIN;
    for k in 0..cols.len() {
        channel_x[k] = x;
        x += channel_w(k);
        col_x[k] = x;
        x += HOST_W;
    }
    channel_x[cols.len()] = x;
    x += channel_w(cols.len());
    let width = (x + MARGIN).max(480.0);
    let track_x =
        |ch: usize, t: usize| channel_x[ch] + zone(ch, Side::Right) + TRACK_GAP * (t as f64 + 1.0);

    let mut hosts = vec![
        Rect {
            x: 0.0,
            y: 0.0,
            w: HOST_W,
            h: 0.0
        };
        c.hosts.len()
    ];
    let mut services = BTreeMap::new();
    for (i, h) in c.hosts.iter().enumerate() {
        let r = Rect {
            x: col_x.get(col_of[i]).copied().unwrap_or(MARGIN),
            y: host_y[i],
            w: HOST_W,
            h: host_height(h),
        };
        for (j, s) in h.services.iter().enumerate() {
            services.insert(
                (h.name.clone(), s.name.clone()),
                Rect {
                    x: r.x + HOST_PAD,
                    y: r.y + HOST_HEADER_H + j as f64 * (SVC_H + SVC_GAP),
                    w: HOST_W - 2.0 * HOST_PAD,
                    h: SVC_H,
                },
            );
        }
        hosts[i] = r;
    }
    if c.hosts.is_empty() {
        bottom = bottom.max(top + 40.0);
    }

    let svc_rect = |h: usize, row: usize| {
        let r = hosts[h];
        Rect {
            x: r.x + HOST_PAD,
            y: r.y + HOST_HEADER_H + row as f64 * (SVC_H + SVC_GAP),
            w: HOST_W - 2.0 * HOST_PAD,
            h: SVC_H,
        }
    };
    let routes = drafts
        .iter()
        .enumerate()
        .map(|(d, draft)| {
            let a = svc_rect(draft.from.0, draft.from.1);
            let b = svc_rect(draft.to.0, draft.to.1);
            let mut points = vec![match draft.exit {
                Side::Right => (a.right(), draft.from.2),
                Side::Left => (a.x, draft.from.2),
            }];
            for (r, &(ch, y0, y1)) in draft.runs.iter().enumerate() {
                let tx = track_x(ch, tracks[&(d, r)]);
                points.push((tx, y0));
                points.push((tx, y1));
            }
            points.push(match draft.entry {
                Side::Left => (b.x, draft.to.2),
                Side::Right => (b.right(), draft.to.2),
            });
            points.dedup();
            let w = draft.label.chars().count() as f64 * LABEL_CHAR_W;
            let target = hosts[draft.to.0];
            let lx = match draft.zone.1 {
                Side::Left => target.x - LABEL_PAD - w,
                Side::Right => target.right() + LABEL_PAD,
            };
            Route {
                flow: draft.flow,
                points,
                label: draft.label.clone(),
                label_box: Rect {
                    x: lx,
                    y: draft.label_top,
                    w,
                    h: LABEL_H,
                },
            }
        })
        .collect();
    Layout {
        hosts,
        services,
        routes,
        width,
        height: bottom + MARGIN - ROW_GAP / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_layered_along_the_flow_and_cycles_do_not_loop() {
        // 0 -> 1 -> 2, 0 -> 2, 3 alone.
        assert_eq!(
            layers(4, &[(0, 1), (1, 2), (0, 2)]),
            [Some(0), Some(1), Some(2), None]
        );
        // A cycle 0 -> 1 -> 0: one edge is left out, so the layers are 0 and 1.
        assert_eq!(layers(2, &[(0, 1), (1, 0)]), [Some(0), Some(1)]);
        // A source 2 feeds the cycle at 1: the cycle is broken at 0 -> 1,
        // the edge going back, so the flow reads 2, 1, 0.
        assert_eq!(
            layers(3, &[(0, 1), (1, 0), (2, 1)]),
            [Some(2), Some(1), Some(0)]
        );
        // Against the host order: 2 -> 1 -> 0.
        assert_eq!(layers(3, &[(2, 1), (1, 0)]), [Some(2), Some(1), Some(0)]);
    }

    #[test]
    fn a_few_hosts_share_a_column_many_are_split() {
        assert_eq!(column_cap(3), 4);
        assert_eq!(column_cap(50), 14);
        assert_eq!(column_cap(1000), 60);
    }
}
