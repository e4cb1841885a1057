package sshhive

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"time"

	"github.com/rbee-project/rbee/internal/humanize"
)

// TestResult is what Test learned about a host.
type TestResult struct {
	// Connect is the time to connect, verify the host key and authenticate.
	Connect time.Duration
	// RoundTrip is the time one remote command took, session open to exit.
	RoundTrip time.Duration
	// Uname is the raw `uname -sm` output; OS and Arch are it mapped to
	// GOOS/GOARCH (empty when the platform is not one Go builds for).
	Uname    string
	OS, Arch string
	// RbeeVersion is the output of `rbee --version` there; empty when rbee
	// is not installed at the probed path.
	RbeeVersion string
}

// probeScript prints uname, a separator, then the version of the first rbee
// found: the given path, else rbee on PATH. It never fails for a missing
// rbee.
const probeScript = `uname -sm; echo '--rbee--'; b=%s; [ -x "$b" ] || b=$(command -v rbee 2>/dev/null); if [ -n "$b" ] && [ -x "$b" ]; then "$b" --version 2>/dev/null; fi; exit 0`

// Test connects to t (see Dial for the errors), runs one command and
// reports the round trip, the remote OS and architecture, and the installed
// rbee's version. rbeePath is where to look for rbee ("" means
// DefaultBinaryPath; "~/" expands against the remote $HOME).
func Test(ctx context.Context, t Target, rbeePath string) (TestResult, error) {
	var res TestResult
	start := time.Now()
	c, err := Dial(ctx, t)
	if err != nil {
		return res, err
	}
	defer c.Close()
	res.Connect = time.Since(start)
	if rbeePath == "" {
		rbeePath = DefaultBinaryPath
	}
	// The probe runs what the host has at rbeePath: one that never answers
	// --version (a hung or hostile binary) must not hold the test until the
	// caller gives up, so the probe gets the dial's time bound.
	timeout := t.Timeout
	if timeout <= 0 {
		timeout = DefaultDialTimeout
	}
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start = time.Now()
	out, err := c.Run(pctx, fmt.Sprintf(probeScript, remotePathExpr(rbeePath)))
	res.RoundTrip = time.Since(start)
	if err != nil && ctx.Err() == nil && pctx.Err() != nil {
		return res, fmt.Errorf("%w: %s: the probe (uname -sm, then %s --version) did not finish within %v: is the rbee there hung?",
			ErrRemoteCommand, t.Addr(), rbeePath, timeout)
	}
	if err != nil {
		return res, err
	}
	uname, ver, _ := strings.Cut(out, "--rbee--")
	res.Uname = strings.TrimSpace(uname)
	res.RbeeVersion = strings.TrimSpace(ver)
	res.OS, res.Arch, err = ParseUname(res.Uname)
	if err != nil {
		return res, err
	}
	return res, nil
}

// remotePathExpr renders p for a remote shell: "~/x" becomes "$HOME"/'x',
// anything else is quoted.
func remotePathExpr(p string) string {
	if p == "~" {
		return `"$HOME"`
	}
	if strings.HasPrefix(p, "~/") {
		return `"$HOME"/` + shellQuote(p[2:])
	}
	return shellQuote(p)
}

// ParseUname maps `uname -sm` output ("Linux x86_64") to GOOS and GOARCH.
// Unknown systems or machines are an ErrInvalid error naming them.
func ParseUname(s string) (goos, goarch string, err error) {
	f := strings.Fields(s)
	if len(f) != 2 {
		return "", "", fmt.Errorf("%w: uname -sm printed %q, want two words", ErrInvalid, humanize.Clip(s, 80))
	}
	sys, mach := strings.ToLower(f[0]), strings.ToLower(f[1])
	switch {
	case sys == "linux":
		goos = "linux"
	case sys == "darwin":
		goos = "darwin"
	case sys == "freebsd", sys == "openbsd", sys == "netbsd", sys == "dragonfly", sys == "illumos", sys == "aix":
		goos = sys
	case sys == "sunos":
		goos = "solaris"
	case strings.HasPrefix(sys, "mingw"), strings.HasPrefix(sys, "msys"), strings.HasPrefix(sys, "cygwin"), sys == "windows_nt":
		goos = "windows"
	default:
		return "", "", fmt.Errorf("%w: unknown operating system %q", ErrInvalid, humanize.Clip(f[0], 40))
	}
	switch mach {
	case "x86_64", "amd64", "x64":
		goarch = "amd64"
	case "aarch64", "arm64", "aarch64_be":
		goarch = "arm64"
	case "i386", "i486", "i586", "i686", "x86", "i86pc":
		goarch = "386"
		if goos == "solaris" || goos == "illumos" {
			goarch = "amd64" // i86pc is the 64-bit PC platform there
		}
	case "riscv64":
		goarch = "riscv64"
	case "ppc64le":
		goarch = "ppc64le"
	case "ppc64":
		goarch = "ppc64"
	case "s390x":
		goarch = "s390x"
	case "loongarch64":
		goarch = "loong64"
	case "mips64":
		goarch = "mips64"
	case "mips":
		goarch = "mips"
	default:
		if strings.HasPrefix(mach, "armv") || mach == "arm" {
			goarch = "arm"
			break
		}
		return "", "", fmt.Errorf("%w: unknown machine architecture %q", ErrInvalid, humanize.Clip(f[1], 40))
	}
	return goos, goarch, nil
}

// SamePlatform reports whether the probed host runs the OS and architecture
// this binary was built for, so the caller can install its own executable
// (os.Executable) instead of fetching one from the catalog.
func (r TestResult) SamePlatform() bool {
	return r.OS == runtime.GOOS && r.Arch == runtime.GOARCH
}
