package process

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// nprocUsage returns the soft RLIMIT_NPROC of this process and how many
// tasks (threads) the kernel counts against it: those of every process
// whose real uid is this process's. ok is false when no limit applies
// (unlimited, or root, whom the kernel does not hold to it).
func nprocUsage() (limit uint64, used int, ok bool) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(rlimitNPROC, &rl); err != nil || rl.Cur == rlimInfinity || os.Geteuid() == 0 {
		return 0, 0, false
	}
	return rl.Cur, userThreads(os.Getuid()), true
}

// rlimitNPROC and rlimInfinity: syscall has no names for them on Linux.
const (
	rlimitNPROC  = 6
	rlimInfinity = ^uint64(0)
)

// userThreads counts the threads of uid's processes, from /proc/*/status.
func userThreads(uid int) int {
	dirs, _ := filepath.Glob("/proc/[0-9]*/status")
	want := []byte(strconv.Itoa(uid))
	n := 0
	for _, p := range dirs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // gone
		}
		var mine bool
		threads := 0
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			line := sc.Bytes()
			if v, found := bytes.CutPrefix(line, []byte("Uid:")); found {
				f := bytes.Fields(v)
				mine = len(f) > 0 && bytes.Equal(f[0], want)
			} else if v, found := bytes.CutPrefix(line, []byte("Threads:")); found {
				threads, _ = strconv.Atoi(string(bytes.TrimSpace(v)))
			}
		}
		if mine {
			n += threads
		}
	}
	return n
}
