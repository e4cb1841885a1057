package node

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/rbee-project/rbee/internal/owner"
)

// checkDataDir refuses a data dir that another user owns (one created
// before the node, in a shared place such as /tmp, by someone who could
// then read and replace the node's keys) and takes group and other
// access away from one this user owns.
func checkDataDir(dir string, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("data dir %s is not a directory", dir)
	}
	if uid, ok := owner.Of(fi); ok && uid != uint32(os.Geteuid()) {
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
