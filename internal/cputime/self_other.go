//go:build !unix

package cputime

import "time"

// Self returns ErrUnsupported: getrusage is a unix call.
func Self() (time.Duration, error) { return 0, ErrUnsupported }
