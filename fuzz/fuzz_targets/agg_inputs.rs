//! Untrusted aggregation inputs — a job file's text, a query payload, an
//! offer's participant list, a protobuf frame — are decoded or refused,
//! never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use sotto_agg::job::JobSpec;
use sotto_agg::message::decode_participants;
use sotto_agg::online::frames::Assembler;
use sotto_agg::table::Query;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = JobSpec::parse(std::path::Path::new("fuzz.toml"), text);
    }
    let _ = Query::decode(data);
    let _ = decode_participants(data);
    if let Ok(frame) = sotto_wire::agg::Frame::decode(data) {
        let _ = Assembler::new(1 << 20).push(frame);
    }
});
