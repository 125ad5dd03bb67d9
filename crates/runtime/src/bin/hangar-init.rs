//! PID 1 of every Hangar machine (see `hangar_runtime::init`) and, on the host, the helper that
//! runs libcontainer's create and exec in a single-threaded process (see `hangar_runtime::create`
//! and `hangar_runtime::exec`).
//! Build it static (see the crate docs): it runs inside images of any libc.

fn main() {
    #[cfg(feature = "driver")]
    {
        let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
        if args
            .first()
            .is_some_and(|a| a == hangar_runtime::create::CREATE_ARG)
        {
            std::process::exit(hangar_runtime::create::run(&args[1..]));
        }
        if args
            .first()
            .is_some_and(|a| a == hangar_runtime::exec::EXEC_ARG)
        {
            std::process::exit(hangar_runtime::exec::run(&args[1..]));
        }
    }
    hangar_runtime::init::main()
}
