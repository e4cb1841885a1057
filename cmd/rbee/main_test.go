package main

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

// TestMain refuses to run as a child process. A command under test that
// starts node processes (bench scale, bench failover, dev) runs
// os.Executable(), which here is this test binary: as `rbee.test node
// ...` it would run the whole test suite again, which starts it again,
// without end. go test passes only flags, so a first argument that is not
// one means such a child: it exits at once, as a node that fails to start.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && !strings.HasPrefix(os.Args[1], "-") {
		fmt.Fprintf(os.Stderr, "rbee.test: not the rbee binary; refusing to run as %q\n", strings.Join(os.Args[1:], " "))
		os.Exit(3)
	}
	os.Exit(m.Run())
}
