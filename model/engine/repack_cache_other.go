//go:build !linux

package engine

import (
	"errors"

	"github.com/rbee-project/rbee/model/quant"
)

// repackCached is Linux only: elsewhere the copies stay in memory.
func (m *Model) repackCached(path, dir string, mats []*quant.Matrix) (int, error) {
	return 0, errors.New("engine: the repack cache is Linux only")
}

// PruneRepackCache has nothing to do where there is no repack cache.
func PruneRepackCache(dir string) error { return nil }
