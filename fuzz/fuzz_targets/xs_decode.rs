#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| xenith::xenstored::fuzz::decode(data));
