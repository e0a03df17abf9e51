//! Session `discovery`: 6 hosts on one bridge started with no `--bootstrap` must find each other
//! through the LAN beacon (wire-spec §15.6) within 5 s; with `--no-lan-discovery` they stay alone.

use std::thread;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::bed::Bed;

/// Runs the session on `bed` (6 LAN hosts, nothing started).
pub fn discovery_session(bed: &mut Bed) -> Result<()> {
    bed.scenario = "lan-find".into();
    let all: Vec<usize> = (0..bed.n()).collect();
    let want = (bed.n() as u64).saturating_sub(1);
    let t0 = Instant::now();
    for &i in &all {
        bed.start(i, &[])?;
    }
    let started = t0.elapsed();
    let found = bed.wait_tables(&all, want, Duration::from_secs(15));
    let tables = crate::bed::table_range(&bed.tables());
    let took = found.map(|d| d + started);
    bed.check(
        &format!("{} hosts with no --bootstrap find each other within 5 s", bed.n()),
        took.is_some_and(|d| d <= Duration::from_secs(5)),
        match took {
            Some(d) => format!("all tables {tables} {:.1} s after the first start", d.as_secs_f64()),
            None => format!("tables {tables} after 15 s"),
        },
    );
    bed.stop_all();
    bed.scenario = "lan-off".into();
    bed.node_flags = vec!["--no-lan-discovery".into()];
    for &i in &all {
        if let Some(h) = bed.hosts.get_mut(i) {
            h.wipe()?;
        }
        bed.start(i, &[])?;
    }
    thread::sleep(Duration::from_secs(5));
    let tables = bed.tables();
    let alone = tables.iter().all(|t| *t == Some(0));
    bed.check("with --no-lan-discovery they stay alone", alone, format!("tables {}", crate::bed::table_range(&tables)));
    Ok(())
}
