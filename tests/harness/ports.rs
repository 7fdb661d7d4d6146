//! Free consecutive ports for one test: probe-bind a block and hold it until the test takes it
//! (slots need `port+i` and, for reloads, `port+N+i`).

use std::net::TcpListener;
use std::sync::atomic::{AtomicU16, Ordering};

/// Lowest port handed out.
const LOW: u16 = 20_000;
/// Ports handed out stay below this (the ephemeral range starts at 32768).
const HIGH: u16 = 32_000;

/// Next base to try; tests in one process walk upwards so they never race for the same block.
static NEXT: AtomicU16 = AtomicU16::new(0);

/// A block of `n` consecutive ports, free at the time of the call. The listeners are dropped
/// when the block is dropped; take the base first.
pub struct Block {
    pub base: u16,
    _held: Vec<TcpListener>,
}

/// Find and hold `n` consecutive free ports on 127.0.0.1.
pub fn block(n: u16) -> Block {
    // Start somewhere per process so parallel test binaries spread out.
    let _ = NEXT.compare_exchange(
        0,
        LOW + (std::process::id() % 1000) as u16 * 10,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..2000 {
        let base = NEXT.fetch_add(n, Ordering::SeqCst);
        if base < LOW || u32::from(base) + u32::from(n) > u32::from(HIGH) {
            NEXT.store(LOW, Ordering::SeqCst);
            continue;
        }
        let held: Result<Vec<_>, _> = (0..n)
            .map(|i| TcpListener::bind(("127.0.0.1", base + i)))
            .collect();
        if let Ok(held) = held {
            return Block { base, _held: held };
        }
    }
    panic!("no block of {n} free ports found");
}
