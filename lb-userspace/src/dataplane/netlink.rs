//! One rtnetlink question asked from synchronous code (the caller may run
//! inside the tokio runtime, so it is asked on a thread of its own).

use std::future::Future;

/// Runs `ask` with a fresh rtnetlink handle and returns its answer.
pub fn ask<T, F, Fut>(ask: F) -> Option<T>
where
    T: Send + 'static,
    F: FnOnce(rtnetlink::Handle) -> Fut + Send + 'static,
    Fut: Future<Output = Option<T>>,
{
    let run = move || -> Option<T> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        rt.block_on(async move {
            let (conn, handle, _) = rtnetlink::new_connection().ok()?;
            tokio::spawn(conn);
            ask(handle).await
        })
    };
    std::thread::spawn(run).join().ok().flatten()
}

/// Whether a netlink call failed with `errno`.
pub fn is_errno(e: &rtnetlink::Error, errno: i32) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.raw_code().abs() == errno)
}
