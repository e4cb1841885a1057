// Package cputime reads the CPU time (user + system) processes have used,
// for benchmarks that report CPU per byte: unlike a rate, it does not
// depend on what else a shared machine runs.
package cputime

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// ErrUnsupported: this platform has no way to read it here.
var ErrUnsupported = errors.New("cputime: not supported on this platform")

// clockTick is the unit of /proc/<pid>/stat's times: USER_HZ, 100 on every
// Linux architecture Go supports (the kernel fixes it for user space).
const clockTick = 10 * time.Millisecond

// Process returns the CPU time process pid has used so far, from
// /proc/<pid>/stat (Linux; ErrUnsupported elsewhere). Its resolution is
// 10 ms.
func Process(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if errors.Is(err, os.ErrNotExist) && !procExists() {
		return 0, ErrUnsupported
	}
	if err != nil {
		return 0, fmt.Errorf("cputime: %w", err)
	}
	// The command name (field 2) is in parentheses and may hold spaces:
	// count fields after its closing one. utime and stime are fields 14, 15.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("cputime: malformed /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("cputime: malformed /proc/%d/stat", pid)
	}
	var ticks int64
	for _, v := range f[11:13] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("cputime: /proc/%d/stat: %w", pid, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * clockTick, nil
}

func procExists() bool {
	_, err := os.Stat("/proc/self/stat")
	return err == nil
}
