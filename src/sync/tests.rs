use super::*;

const MIN: i64 = 60_000_000_000;

/// A warehouse clock far after every time used in these tests.
const NOW: i64 = 1_000_000 * MIN;

#[test]
fn first_run_reads_everything_or_from_backfill_since() {
    assert_eq!(
        window_since(None, Duration::from_secs(600), None, NOW),
        None
    );
    assert_eq!(
        window_since(None, Duration::from_secs(600), Some(1000), NOW),
        Some(999)
    );
}

#[test]
fn later_runs_reread_the_lookback() {
    let w = 100 * MIN;
    assert_eq!(
        window_since(Some(w), Duration::from_secs(600), None, NOW),
        Some(90 * MIN)
    );
    // The backfill floor still holds.
    assert_eq!(
        window_since(Some(w), Duration::from_secs(600), Some(95 * MIN), NOW),
        Some(95 * MIN - 1)
    );
}

#[test]
fn a_watermark_in_the_future_is_read_from_the_warehouses_now() {
    let now = 100 * MIN;
    assert_eq!(
        window_since(Some(now + 4 * MIN), Duration::from_secs(60), None, now),
        Some(now - MIN)
    );
    assert_eq!(next_watermark(Some(now + 4 * MIN), None, now), Some(now));
}

#[test]
fn full_reads_happen_first_and_then_every_interval() {
    let h = 3_600_000_000_000i64;
    let every = Some(Duration::from_secs(3600));
    assert!(full_read_due(None, None, None, 0));
    assert!(!full_read_due(Some(1), Some(0), None, 100 * h));
    assert!(full_read_due(Some(1), None, every, 5 * h));
    assert!(!full_read_due(Some(1), Some(5 * h), every, 5 * h + h / 2));
    assert!(full_read_due(Some(1), Some(5 * h), every, 6 * h));
}

#[test]
fn the_window_starts_just_after_w_minus_lookback() {
    // The lookback re-reads (W - L, W]: a late row stamped inside it lands
    // on the next run; one at or before W - L needs a full resync.
    let w = 100 * MIN;
    let since = window_since(Some(w), Duration::from_secs(600), None, NOW).unwrap();
    assert!(w - 10 * MIN + 1 > since);
    assert!(w - 10 * MIN <= since);
    // A lookback longer than all of time saturates instead of wrapping.
    assert_eq!(
        window_since(Some(i64::MIN + 5), Duration::from_secs(600), None, NOW),
        Some(i64::MIN)
    );
}

#[test]
fn future_rows_are_written_but_never_move_the_watermark_past_now() {
    let now = 1_000 * MIN;
    let limit = now + 5 * MIN;
    let mut g = None;
    for ts in [10 * MIN, 3_000 * MIN, 20 * MIN, limit, limit + 1, 15 * MIN] {
        g = watermark_candidate(g, ts, limit);
    }
    assert_eq!(
        g,
        Some(limit),
        "the limit itself counts, a nanosecond later does not"
    );
    assert_eq!(watermark_candidate(None, limit + 1, limit), None);
    // A row inside the skew moves the watermark at most to now, so an
    // on-time row stamped before it and delivered later is still read.
    assert_eq!(next_watermark(Some(5), g, now), Some(now));
    // Only future rows read: the watermark stays where it was.
    assert_eq!(next_watermark(Some(5), None, now), Some(5));
}

#[test]
fn latest_row_per_entity_wins_in_any_arrival_order_and_equal_times_keep_the_later_read() {
    let mut latest = HashMap::new();
    // Out-of-order chunks: batch 1 holds older rows than batch 0.
    keep_latest(&mut latest, "a", (20, 0, 0));
    keep_latest(&mut latest, "b", (5, 0, 1));
    keep_latest(&mut latest, "a", (10, 1, 0));
    keep_latest(&mut latest, "b", (5, 1, 1));
    keep_latest(&mut latest, "c", (7, 1, 2));
    assert_eq!(latest["a"], (20, 0, 0));
    assert_eq!(latest["b"], (5, 1, 1));
    assert_eq!(latest["c"], (7, 1, 2));
}

#[test]
fn watermark_never_moves_backwards() {
    assert_eq!(next_watermark(Some(10), Some(5), NOW), Some(10));
    assert_eq!(next_watermark(Some(10), Some(15), NOW), Some(15));
    assert_eq!(next_watermark(None, Some(15), NOW), Some(15));
    assert_eq!(next_watermark(Some(10), None, NOW), Some(10));
    assert_eq!(next_watermark(None, None, NOW), None);
}
