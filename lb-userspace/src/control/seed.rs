//! The flow hash's key when the config sets none (`gateway.hash_seed = ""`,
//! a gateway on its own): generated once from the kernel's random source
//! and kept in `state_dir/hash_seed` (mode 0600), so restarts and reloads
//! hash alike. (A scale-out set must share one: `lb check` requires
//! `hash_seed` with `[announce]`.)

use std::{
    io::{Read as _, Write as _},
    os::unix::fs::OpenOptionsExt as _,
    path::Path,
};

use anyhow::{bail, Context as _, Result};

use crate::config::Gateway;

pub const SEED_FILE: &str = "hash_seed";

/// Sets `g.hash_seed` from `g.state_dir` when the config left it empty.
pub fn fill(g: &mut Gateway) -> Result<()> {
    if g.hash_seed.is_empty() {
        g.hash_seed = load_or_create(&g.state_dir)?;
    }
    Ok(())
}

fn load_or_create(dir: &Path) -> Result<String> {
    let path = dir.join(SEED_FILE);
    match std::fs::read_to_string(&path) {
        Ok(s) => {
            let s = s.trim().to_string();
            let g = Gateway {
                hash_seed: s.clone(),
                ..Default::default()
            };
            if g.hash_key().is_none() {
                bail!(
                    "{}: not 16 hex digits; remove it (a new key is made) or set gateway.hash_seed",
                    path.display()
                );
            }
            return Ok(s);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let mut b = [0u8; 8];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .context("reading /dev/urandom for the flow hash's key")?;
    let seed = format!("{:016x}", u64::from_ne_bytes(b));
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating gateway.state_dir {}", dir.display()))?;
    // Written aside and renamed: a crash leaves no half key.
    let tmp = dir.join(format!(".{SEED_FILE}.tmp"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(format!("{seed}\n").as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_once_then_kept() {
        let dir = std::env::temp_dir().join(format!("lb-seed-{}", std::process::id()));
        let mut g = Gateway {
            state_dir: dir.clone(),
            ..Default::default()
        };
        fill(&mut g).unwrap();
        let first = g.hash_seed.clone();
        assert!(g.hash_key().is_some(), "{first}");
        let mut again = Gateway {
            state_dir: dir.clone(),
            ..Default::default()
        };
        fill(&mut again).unwrap();
        assert_eq!(again.hash_seed, first, "kept across restarts");
        let mode = std::fs::metadata(dir.join(SEED_FILE)).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
            0o600
        );
        let mut set = Gateway {
            state_dir: dir.clone(),
            hash_seed: "00112233445566ff".into(),
            ..Default::default()
        };
        fill(&mut set).unwrap();
        assert_eq!(
            set.hash_key(),
            Some([0x0011_2233, 0x4455_66ff]),
            "the config's wins"
        );
        std::fs::write(dir.join(SEED_FILE), "zz").unwrap();
        let mut bad = Gateway {
            state_dir: dir.clone(),
            ..Default::default()
        };
        assert!(format!("{:#}", fill(&mut bad).unwrap_err()).contains("16 hex digits"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
