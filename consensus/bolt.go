package consensus

import (
	"time"

	bolt "go.etcd.io/bbolt"
)

// boltOptions: a short lock timeout so that a second process on the same
// data dir fails fast instead of hanging.
func boltOptions() *bolt.Options {
	return &bolt.Options{Timeout: 2 * time.Second, NoFreelistSync: true}
}
