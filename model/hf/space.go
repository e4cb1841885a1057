package hf

import "fmt"

// CheckSpace returns ErrNoSpace when the file system holding dir has less
// than need bytes free beyond the reserve every Transfer keeps (for a
// caller that writes more than one transfer's bytes: the catalog merges a
// split model's parts into one file). Platforms that cannot tell pass.
func CheckSpace(dir string, need int64, what string) error {
	if need <= 0 {
		return nil
	}
	free, ok, err := freeBytes(dir)
	if err != nil || !ok {
		return err
	}
	if free < uint64(need)+spaceReserve {
		return fmt.Errorf("%w: %s needs %d bytes (+%d reserve), %d free in %s", ErrNoSpace, what, need, spaceReserve, free, dir)
	}
	return nil
}
