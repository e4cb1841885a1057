package node

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/rbee-project/rbee/internal/owner"
)

// checkDataDir refuses a data dir that another user owns (one created
// before the node, in a shared place such as /tmp, by someone who could
// then read and replace the node's keys), one reached through another
// user's symbolic link, and one in a directory others may write without
// the sticky bit (they could move it away and put their own in its
// place); it takes group and other access away from one this user owns.
func checkDataDir(dir string, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	me := uint32(os.Geteuid())
	if li, err := os.Lstat(dir); err == nil && li.Mode()&os.ModeSymlink != 0 {
		if uid, ok := owner.Of(li); ok && uid != me && uid != 0 {
			return fmt.Errorf("data dir %s is a symbolic link of uid %d, not of this user (uid %d): it could be pointed elsewhere; use a directory of your own", dir, uid, me)
		}
	}
	if abs, err := filepath.Abs(dir); err == nil {
		if pi, err := os.Stat(filepath.Dir(abs)); err == nil && pi.Mode().Perm()&0o022 != 0 && pi.Mode()&os.ModeSticky == 0 {
			return fmt.Errorf("data dir %s is in %s, which other users may write (mode %v, no sticky bit): they could replace the data dir; use a directory of your own", dir, filepath.Dir(abs), pi.Mode().Perm())
		}
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("data dir %s is not a directory", dir)
	}
	if uid, ok := owner.Of(fi); ok && uid != me {
		return fmt.Errorf("data dir %s belongs to uid %d, not to this user (uid %d): another user could read or replace the node's keys; use a directory of your own", dir, uid, os.Geteuid())
	}
	if fi.Mode().Perm()&0o077 != 0 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("data dir %s is open to other users (mode %v) and cannot be made private: %w", dir, fi.Mode().Perm(), err)
		}
		log.Warn("data dir was open to other users; made it private (0700)", "dir", dir, "was", fi.Mode().Perm().String())
	}
	return nil
}
