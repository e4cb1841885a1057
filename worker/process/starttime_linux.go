package process

import (
	"os"
	"strconv"
	"strings"
)

// startTicks returns the process start time in clock ticks since boot
// (field 22 of /proc/<pid>/stat). Unlike a wall-clock create time, which
// is derived from the boot time and moves when the clock is stepped, it
// never changes for the life of the process, so it identifies a process
// exactly together with its pid.
func startTicks(pid int) (uint64, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	s := string(b)
	// The command name (field 2) is in parentheses and may itself contain
	// spaces and parentheses: the fields after it follow the last ')'.
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(s[i+1:])
	const startField = 22 - 3 // f[0] is field 3 (state)
	if len(f) <= startField {
		return 0, false
	}
	v, err := strconv.ParseUint(f[startField], 10, 64)
	return v, err == nil
}
