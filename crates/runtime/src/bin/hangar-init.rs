//! PID 1 of every Hangar machine; see `hangar_runtime::init`. Build it static (see the crate
//! docs): it runs inside images of any libc.

fn main() {
    hangar_runtime::init::main()
}
