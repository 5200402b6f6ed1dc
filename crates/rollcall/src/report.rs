//! Printing a roll-call's report: a table for people, JSON for programs.

use std::fmt::Write;

use rollcall_hub::ScanReport;

/// The report as a table: one line per host answer and per service.
pub fn table(report: &ScanReport) -> String {
    let mut rows: Vec<[String; 6]> = vec![[
        "HOST".into(),
        "ADDRESS".into(),
        "SERVICE".into(),
        "INPUTS".into(),
        "OUTPUTS".into(),
        "CONTROL".into(),
    ]];
    let dash = || "-".to_string();
    for host in &report.hosts {
        let addr = host.ipaddr.clone().unwrap_or_else(dash);
        let ms = host
            .t_ms
            .map_or_else(|| "(no host answer)".into(), |t| format!("(host, {t} ms)"));
        rows.push([
            host.hostname.clone(),
            addr.clone(),
            ms,
            dash(),
            dash(),
            dash(),
        ]);
        for s in &host.services {
            rows.push([
                String::new(),
                String::new(),
                s.function.clone(),
                s.inputs.clone().unwrap_or_else(dash),
                s.outputs.clone().unwrap_or_else(dash),
                s.control.clone().unwrap_or_else(dash),
            ]);
        }
    }
    let widths: Vec<usize> = (0..6)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = format!(
        "roll-call {}: {} hosts, {} services, last answer after {} ms (window {} ms)\n",
        report.id,
        report.hosts.len(),
        report.service_count(),
        report
            .last_answer_ms()
            .map_or_else(|| "-".into(), |t| t.to_string()),
        report.window_ms,
    );
    // Said only when it happened: a copy dropped means two paths (a bridge
    // loop, docs/deploying.md) brought one answer twice.
    if report.duplicates > 0 {
        let _ = writeln!(
            out,
            "{} answers arrived twice and were counted once",
            report.duplicates
        );
    }
    for row in rows {
        let mut line = String::new();
        for (cell, width) in row.iter().zip(&widths) {
            let _ = write!(line, "{cell:<width$}  ");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The report as the JSON `rollcall scan --json` prints.
pub fn json(report: &ScanReport) -> String {
    serde_json::to_string_pretty(report).unwrap_or_default()
}

/// Prints the report in the chosen form.
pub fn print(report: &ScanReport, as_json: bool) {
    if as_json {
        println!("{}", json(report));
    } else {
        print!("{}", table(report));
    }
}
