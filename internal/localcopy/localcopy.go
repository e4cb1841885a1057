// Package localcopy is the baseline of rbee's transfer benchmarks: a plain
// local file copy, the fastest way a file gets from one place to another
// on the same machine.
package localcopy

import (
	"fmt"
	"io"
	"os"
)

// Copy copies src to a new file dst with io.Copy (copy_file_range on
// Linux: the kernel copies, no user-space buffer) and fsyncs dst, the
// durability a model copy also pays before it is renamed into place. dst
// is removed when the copy fails.
func Copy(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("localcopy: %w", err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("localcopy: %w", err)
	}
	_, err = io.Copy(out, in)
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(dst)
		return fmt.Errorf("localcopy: %w", err)
	}
	return nil
}
