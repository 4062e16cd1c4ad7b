//! The instance lock: in the daemon's runtime directory (never one other
//! users may write), not followed through links, naming its holder.

use std::{os::unix::fs::PermissionsExt as _, path::PathBuf};

use lb_userspace::control::instance::{holder, lock, lock_path, Holder};

/// A fresh directory under the target dir, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("lb-instance-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        Dir(d)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const PIN: &str = "/sys/fs/bpf/lb-test";

#[test]
fn lock_is_private_exclusive_and_names_its_holder() {
    let dir = Dir::new("ok");
    let run = dir.0.join("run");
    let sock = run.join("lb.sock");
    let f = lock(&sock, PIN.as_ref()).expect("first lock");
    // The runtime directory is made 0700, the lock 0600, holding our pid.
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&run), 0o700);
    let path = lock_path(&sock, PIN.as_ref());
    assert_eq!(path.parent(), Some(run.as_path()));
    assert_eq!(mode(&path), 0o600);
    let me = std::process::id();
    assert_eq!(holder(&sock, PIN.as_ref()).unwrap(), Holder::Held(Some(me)));
    let err = format!("{:#}", lock(&sock, PIN.as_ref()).unwrap_err());
    assert!(
        err.contains(&format!(
            "another `lb run` (pid {me}) already serves gateway.pin_path {PIN}"
        )),
        "{err}"
    );
    drop(f);
    assert_eq!(holder(&sock, PIN.as_ref()).unwrap(), Holder::Free);
    lock(&sock, PIN.as_ref()).expect("free again");
}

#[test]
fn a_directory_others_may_write_is_refused() {
    // As /run/lock is: anyone could create (and hold) the lock there.
    let dir = Dir::new("open");
    std::fs::create_dir_all(&dir.0).unwrap();
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let err = format!(
        "{:#}",
        lock(&dir.0.join("lb.sock"), PIN.as_ref()).unwrap_err()
    );
    assert!(
        err.contains(&format!(
            "gateway.admin_socket: {} is writable by other users (mode 1777)",
            dir.0.display()
        )),
        "{err}"
    );
    assert!(!lock_path(&dir.0.join("lb.sock"), PIN.as_ref()).exists());
}

#[test]
fn a_link_in_place_of_the_lock_is_not_followed() {
    let dir = Dir::new("link");
    std::fs::create_dir_all(&dir.0).unwrap();
    let sock = dir.0.join("lb.sock");
    let elsewhere = dir.0.join("elsewhere");
    std::os::unix::fs::symlink(&elsewhere, lock_path(&sock, PIN.as_ref())).unwrap();
    let err = format!("{:#}", lock(&sock, PIN.as_ref()).unwrap_err());
    assert!(err.contains("a symbolic link there is refused"), "{err}");
    assert!(!elsewhere.exists(), "nothing was created through the link");
}

#[test]
fn a_directory_of_another_user_is_refused() {
    // Mode 0755, but another user could create and hold the lock in it.
    let dir = Dir::new("owner");
    std::fs::create_dir_all(&dir.0).unwrap();
    let c = std::ffi::CString::new(dir.0.to_str().unwrap()).unwrap();
    if unsafe { libc::chown(c.as_ptr(), 12345, 12345) } != 0 {
        eprintln!("chown needs root: skipped");
        return;
    }
    let err = format!(
        "{:#}",
        lock(&dir.0.join("lb.sock"), PIN.as_ref()).unwrap_err()
    );
    assert!(
        err.contains(&format!(
            "gateway.admin_socket: {} belongs to uid 12345",
            dir.0.display()
        )),
        "{err}"
    );
}
