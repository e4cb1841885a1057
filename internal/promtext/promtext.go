// Package promtext reads samples from Prometheus' text exposition format
// (what a node's /metrics serves), for benches and tests.
package promtext

import (
	"bufio"
	"io"
	"strconv"
	"strings"
)

// maxLine bounds one line of the exposition.
const maxLine = 1 << 20

// Value returns the value of the unlabelled sample name in r: the first
// line "name value". ok is false when there is none or it does not
// parse.
func Value(r io.Reader, name string) (v float64, ok bool) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxLine)
	for sc.Scan() {
		if rest, found := strings.CutPrefix(sc.Text(), name+" "); found {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			return v, err == nil
		}
	}
	return 0, false
}
