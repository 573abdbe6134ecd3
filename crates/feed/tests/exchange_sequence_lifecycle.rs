//! The exchange mapper follows the upstream sequence lifecycle (crates/feed/src/upstream_seq.rs):
//! a reconnect is a new session, and an absurd Coinbase `trade_id` never becomes a baseline.

use std::collections::HashMap;
use std::sync::Arc;

use tickgate_core::{AssetClass, SymbolInfo, SymbolTable};
use tickgate_feed::exchange::{Exchange, ExchangeMapper};
use tickgate_feed::normalize::Reject;
use tickgate_feed::upstream_seq::ResetReason;

fn matched(trade_id: u64) -> Vec<u8> {
    format!(
        r#"{{"type":"match","trade_id":{trade_id},"sequence":1,"time":"2022-10-19T23:28:22.5Z","product_id":"ETH-USD","size":"1","price":"1","side":"sell"}}"#
    )
    .into_bytes()
}

#[test]
fn a_reconnect_is_a_new_session_and_an_absurd_trade_id_no_baseline() {
    let mut table = SymbolTable::new();
    table
        .insert(SymbolInfo { name: "ETH-USD".into(), class: AssetClass::Crypto, price_scale: 2, size_scale: 8 })
        .unwrap();
    let mut m = ExchangeMapper::new(Exchange::Coinbase, Arc::new(table), &HashMap::new()).with_max_seq_jump(1_000);
    let map = |m: &mut ExchangeMapper, id| {
        let normalized = m.map(&mut matched(id), 0).unwrap().unwrap();
        (normalized.upstream_gap, normalized.upstream_reset)
    };
    assert_eq!(map(&mut m, 100), (None, None));
    m.new_session();
    assert_eq!(map(&mut m, 103), (Some((101, 102)), None), "a session that carries on: the trades missed meanwhile");
    m.new_session();
    assert_eq!(map(&mut m, 1), (None, Some(ResetReason::UpstreamRestart)), "a session that numbers afresh");
    assert_eq!(map(&mut m, 5_000), (None, Some(ResetReason::SeqJump)), "past max_seq_jump");
    assert_eq!(map(&mut m, 2), (None, Some(ResetReason::SeqJump)), "the jump is no baseline");
    assert_eq!(map(&mut m, 3), (None, None));
    assert_eq!(m.map(&mut matched(3), 0), Err(Reject::SeqBackwards), "a repeat");
}
