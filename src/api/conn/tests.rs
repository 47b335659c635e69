//! Eviction order and the wait on a client, on the table and states alone (no sockets).

use super::*;

/// Every connection waiting on its client counts as stalled with this, none with `STEADY`.
const STALLED: Duration = Duration::ZERO;
const STEADY: Duration = Duration::from_secs(3600);

fn served(table: &ConnTable) -> Arc<ConnState> {
    let c = table.admit(2, STEADY).expect("a slot");
    drop(c.start_request());
    c
}

#[test]
fn a_full_table_evicts_the_connection_idle_longest() {
    let table = ConnTable::default();
    let old = served(&table);
    let recent = served(&table);
    old.last_active_ms.store(0, Ordering::Relaxed);
    recent.last_active_ms.store(10, Ordering::Relaxed);
    let _new = table.admit(2, STEADY).expect("an idle one evicted");
    assert!(old.is_closing());
    assert!(!recent.is_closing());
}

#[test]
fn a_full_table_evicts_a_silent_newcomer_before_a_served_idle_client() {
    let table = ConnTable::default();
    let client = served(&table);
    client.last_active_ms.store(0, Ordering::Relaxed);
    let silent = table.admit(2, STEADY).expect("a slot");
    silent.last_active_ms.store(10, Ordering::Relaxed);
    let _new = table.admit(2, STEADY).expect("the silent one evicted");
    assert!(silent.is_closing());
    assert!(!client.is_closing());
}

#[test]
fn a_first_request_still_unfinished_is_evicted_when_none_is_idle() {
    let table = ConnTable::default();
    let served_busy = served(&table);
    let _busy = served_busy.start_request();
    let slow_first = table.admit(2, STEADY).expect("a slot");
    let _slow = slow_first.start_request();
    let _new = table
        .admit(2, STEADY)
        .expect("the unproductive one evicted");
    assert!(slow_first.is_closing());
    assert!(!served_busy.is_closing());
}

#[test]
fn clients_served_and_busy_are_never_evicted_for_a_newcomer() {
    let table = ConnTable::default();
    let (a, b) = (served(&table), served(&table));
    let _busy = (a.start_request(), b.start_request());
    assert!(table.admit(2, STEADY).is_none());
    assert!(!a.is_closing() && !b.is_closing());
}

#[test]
fn a_connection_stalled_on_its_client_is_evicted_before_a_silent_newcomer() {
    let table = ConnTable::default();
    let stalled = served(&table);
    let _answer = stalled.start_request();
    stalled.note_write(true);
    let _silent = table.admit(2, STALLED).expect("a slot");
    let _new = table.admit(2, STALLED).expect("the stalled one evicted");
    assert!(stalled.is_closing());
}

#[test]
fn a_reader_keeping_up_with_its_answer_is_busy_not_idle() {
    let table = ConnTable::default();
    let reader = served(&table);
    // Its answer handed to the socket, which is full: the client reads, slowly.
    reader.note_write(true);
    let idle = served(&table);
    idle.last_active_ms.store(10, Ordering::Relaxed);
    reader.last_active_ms.store(0, Ordering::Relaxed);
    let _new = table.admit(2, STEADY).expect("the idle one evicted");
    assert!(idle.is_closing());
    assert!(!reader.is_closing());
    let _newer = table.admit(2, STEADY).expect("the silent newcomer evicted");
    assert!(
        !reader.is_closing(),
        "a steady reader is not evicted while others can be"
    );
}

#[test]
fn a_write_that_goes_through_ends_the_wait_on_the_client() {
    let table = ConnTable::default();
    let c = table.admit(2, STEADY).expect("a slot");
    assert!(c.waiting_since().is_none());
    c.note_write(true);
    let since = c.waiting_since().expect("waiting");
    c.note_write(true);
    assert_eq!(
        c.waiting_since(),
        Some(since),
        "the first full write starts the wait"
    );
    c.note_write(false);
    assert!(c.waiting_since().is_none());
}

#[test]
fn an_answer_the_transport_does_not_take_is_a_wait_on_the_client_from_its_oldest() {
    let table = ConnTable::default();
    let c = table.admit(2, STEADY).expect("a slot");
    let first = c.answer_ready();
    let since = c.waiting_since().expect("waiting");
    let second = c.answer_ready();
    assert_eq!(c.waiting_since(), Some(since));
    drop(first);
    assert!(c.waiting_since().is_some_and(|s| s >= since));
    drop(second);
    assert!(c.waiting_since().is_none());
}
