package catalog

import (
	"fmt"
	"regexp"
	"sync"
)

// nameRE is the shape of every name that becomes a path component: types,
// versions, OS and architecture names, binary names. It starts with a letter
// or digit (so "." and ".." and hidden files are impossible), has no path
// separators, and is short enough to stay far below any filesystem limit.
var nameRE = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$`) })

// ValidName reports whether s may be used as a type, version, OS,
// architecture or binary name. It returns an error wrapping ErrBadName
// naming the field otherwise.
func ValidName(field, s string) error {
	if !nameRE().MatchString(s) {
		return fmt.Errorf("%w: %s %q (want 1-128 of [A-Za-z0-9._+-], starting with a letter or digit)", ErrBadName, field, s)
	}
	return nil
}
