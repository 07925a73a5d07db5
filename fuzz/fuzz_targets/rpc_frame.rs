#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| xenith::proto::rpc::fuzz_frames(data));
