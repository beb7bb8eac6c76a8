//! Page poisoning, measured (issue 13): the alloc+free pair with poisoning
//! off, in pattern mode and in protect mode, in the same run; order 0 and
//! order 9, with 1,000 blocks held in a 65,536-page anonymous arena (the
//! setting of the peer table in `BENCHMARKS.md`). Minimum and median per
//! pair over short interleaved rounds.

use std::time::Instant;

use pinowner::poison::Poison;
use pinowner::{Backing, PageArena};

fn arena(poison: Poison) -> PageArena {
    PageArena::builder().pages(1 << 16).backing(Backing::Anonymous).poison(poison).build().unwrap()
}

fn main() {
    // `cargo bench` passes `--bench`; test runners listing or running bench
    // targets in test mode do not, and get nothing to run.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let modes = [Poison::Off, Poison::Pattern, Poison::Protect];
    let arenas: Vec<_> = modes.iter().map(|&m| arena(m)).collect();
    let held: Vec<Vec<_>> = arenas.iter().map(|a| (0..1000).map(|_| a.alloc(0).unwrap()).collect()).collect();
    for (order, pairs, rounds) in [(0u8, 2000u32, 40), (9, 20, 40)] {
        println!("alloc+free of order {order} ({pairs} pairs a round, {rounds} rounds, 1000 blocks held)");
        let mut times: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
        for _ in 0..rounds {
            for (i, a) in arenas.iter().enumerate() {
                let t = Instant::now();
                for _ in 0..pairs {
                    let b = a.alloc(order).unwrap();
                    drop(std::hint::black_box(b));
                }
                times[i].push(t.elapsed().as_secs_f64() * 1e9 / pairs as f64);
            }
        }
        for (mode, t) in modes.iter().zip(&mut times) {
            t.sort_by(f64::total_cmp);
            let what = if *mode == Poison::Off { format!("{mode:?} (baseline)") } else { format!("{mode:?}") };
            println!("  {what:<16} min {:>10.1} ns   median {:>10.1} ns", t[0], t[t.len() / 2]);
        }
    }
    assert!(arenas.iter().all(|a| a.poison_errors().is_empty()));
    drop(held);
}
