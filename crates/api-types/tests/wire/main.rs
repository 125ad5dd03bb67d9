//! Wire-format tests of `hangar-api-types` (one test binary).

mod bad_input;
mod duration;
mod enums;
mod fixtures;
mod payloads;
mod schema;
mod swagger;
