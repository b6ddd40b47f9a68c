//! glibc malloc settings for this process, made before its first thread starts.
//!
//! Why: the daemon's live heap rises and falls with every scheduler slot (at 10,000 rollouts
//! a slot's answers, splits and verdicts come and go within a second), and glibc's defaults
//! keep what such a slot freed instead of giving it back:
//! - every thread that allocates gets its own arena, and an arena reuses only what was freed in
//!   it, so each runtime worker grows to its own high-water mark and the process holds the sum;
//! - a large block (a Prometheus answer, a slot's list of rollouts) is mapped on its own only
//!   until the first such block is freed: glibc then raises its threshold to that size, and
//!   later large blocks come from the arenas, where they stay after they are freed.
//!
//! One arena and a fixed mmap threshold make peak RSS follow the live heap more closely
//! (BENCHMARKS.md, "Scale — session 11"), at the cost of some lock contention between the
//! runtime's workers (glibc's per-thread cache still serves most small blocks without the lock).
//!
//! An operator's own choice wins: with any `MALLOC_*` setting or `GLIBC_TUNABLES` in the
//! environment nothing is changed. On other C libraries this does nothing.

/// Arenas glibc may make: one, shared by every thread.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const ARENAS: i32 = 1;

/// Blocks from this size up are mapped on their own and unmapped when freed (glibc's default
/// starting threshold, kept fixed instead of rising).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: i32 = 128 * 1024;

/// Applies the settings; call first in `main`, before any thread exists.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        if operator_chose(std::env::vars_os().map(|(k, _)| k)) {
            return;
        }
        // SAFETY: `mallopt` only changes glibc's allocator parameters, and it is called before
        // any other thread exists, so no allocation races with the change. It returns 0 when
        // glibc refuses a value, which then keeps its default: more memory, nothing else.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, ARENAS);
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        }
    }
}

/// Whether the environment already tunes glibc's malloc (`MALLOC_ARENA_MAX`,
/// `MALLOC_MMAP_THRESHOLD_`, … or `GLIBC_TUNABLES`).
fn operator_chose(names: impl IntoIterator<Item = std::ffi::OsString>) -> bool {
    names.into_iter().any(|n| {
        n.to_str()
            .is_some_and(|n| n.starts_with("MALLOC_") || n == "GLIBC_TUNABLES")
    })
}

#[cfg(test)]
mod tests {
    use super::operator_chose;

    fn names(list: &[&str]) -> Vec<std::ffi::OsString> {
        list.iter().map(Into::into).collect()
    }

    #[test]
    fn an_operators_malloc_setting_is_left_alone() {
        assert!(operator_chose(names(&["PATH", "MALLOC_ARENA_MAX"])));
        assert!(operator_chose(names(&["MALLOC_MMAP_THRESHOLD_"])));
        assert!(operator_chose(names(&["HOME", "GLIBC_TUNABLES"])));
    }

    #[test]
    fn without_one_the_daemon_sets_its_own() {
        assert!(!operator_chose(names(&["PATH", "HOME", "CANARYD_LISTEN"])));
        assert!(!operator_chose(names(&[])));
        // Not a malloc setting, though it mentions one.
        assert!(!operator_chose(names(&["MY_MALLOC_ARENA_MAX"])));
    }
}
