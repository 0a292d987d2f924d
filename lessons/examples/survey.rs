//! How often each lesson's broken run fails as the lesson says, per seed (for choosing
//! a lesson's default seed): `cargo run -p lessons --example survey [-- SEEDS [NAME]]`.

fn main() {
    let mut args = std::env::args().skip(1);
    let seeds: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(20);
    let only = args.next();
    for l in lessons::all() {
        if only.as_deref().is_some_and(|n| n != l.name) {
            continue;
        }
        let t = std::time::Instant::now();
        let mut caught = Vec::new();
        for seed in 0..seeds {
            let o = lessons::Options {
                seed: Some(seed),
                tries: 1,
                context: 0,
                quiet: true,
                verbose: false,
            };
            let r = lessons::run(&l, &o);
            if r.as_designed() {
                caught.push(seed);
            }
            if matches!(l.kind, lessons::Kind::CorruptedCe) {
                break;
            }
        }
        println!(
            "{:<22} {:>3} caught, seeds {:?} ({:.1} s)",
            l.name,
            caught.len(),
            caught,
            t.elapsed().as_secs_f64()
        );
    }
}
