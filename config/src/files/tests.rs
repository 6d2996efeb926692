use super::*;

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, Permissions::from_mode(mode)).unwrap();
}

#[test]
fn a_new_data_dir_is_the_admin_s_alone() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("a/b/data");
    data_dir(&dir).unwrap();
    assert_eq!(mode_of(&dir), 0o700);
}

#[test]
fn an_open_data_dir_is_closed_to_others() {
    let dir = tempfile::tempdir().unwrap();
    chmod(dir.path(), 0o755);
    data_dir(dir.path()).unwrap();
    assert_eq!(mode_of(dir.path()), 0o700);
}

#[test]
fn new_files_get_exactly_their_mode() {
    let dir = tempfile::tempdir().unwrap();
    for mode in [DATABASE_MODE, LOG_MODE] {
        let path = dir.path().join(format!("{mode:o}"));
        private_file(&path, mode).unwrap();
        assert_eq!(mode_of(&path), mode);
    }
}

#[test]
fn existing_files_are_tightened_never_loosened_nor_truncated() {
    let dir = tempfile::tempdir().unwrap();
    for (was, mode, now) in [
        (0o644, DATABASE_MODE, 0o600),
        (0o666, LOG_MODE, 0o640),
        (0o600, LOG_MODE, 0o600),
    ] {
        let path = dir.path().join(format!("{was:o}-{mode:o}"));
        std::fs::write(&path, "kept").unwrap();
        chmod(&path, was);
        private_file(&path, mode).unwrap();
        assert_eq!(mode_of(&path), now, "{was:o} with {mode:o}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "kept");
    }
}

#[test]
fn a_missing_file_is_left_missing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("canopy.db-wal");
    tighten(&path, DATABASE_MODE).unwrap();
    assert!(!path.exists());
}
