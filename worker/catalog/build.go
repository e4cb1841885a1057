package catalog

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"
)

// buildTailBytes bounds the compiler output kept for a failed build's
// error: enough for dozens of compiler errors, small enough for an event.
const buildTailBytes = 16 << 10

// waitDelay bounds the wait for a killed go command's output pipes.
const waitDelay = 5 * time.Second

// BuildOptions says what to build. Exactly one of SourceDir and
// ModuleVersion is set.
type BuildOptions struct {
	// Type is the worker type; "" means TypeCPU.
	Type string
	// SourceDir is any directory inside the Go module that holds the type's
	// main package (the node passes its own source tree); the module root is
	// found with `go env GOMOD` run there.
	SourceDir string
	// ModuleVersion builds with `go install <module>/<pkg>@ModuleVersion`
	// into a temp GOBIN instead (e.g. "v0.2.0" or "latest"); the resolved
	// module version becomes the entry's version.
	ModuleVersion string
	// GoBinary is the go command; "" means "go" from PATH.
	GoBinary string
	// Env is appended to the environment the go command runs with (which
	// starts from this process's environment, as go needs HOME, PATH and
	// its caches): e.g. GOPROXY or GOFLAGS. CGO_ENABLED=0 and this
	// machine's GOOS/GOARCH always win.
	Env []string
	// OS and Arch are the target platform; "" means this machine's. A
	// source build cross-compiles (the code is pure Go); a module build
	// cannot (go install refuses cross-compiled binaries with GOBIN set).
	OS, Arch string
	// Output, when set, receives the go command's output line by line
	// (stdout and stderr interleaved, as produced), from one goroutine.
	Output func(line string)
}

// Build compiles a worker binary and adds it to the catalog with source
// SourceBuilt, for this machine's OS and architecture: `go build -trimpath`
// of the type's package with CGO_ENABLED=0 from a source tree, or
// `go install -trimpath <module>/<pkg>@version` into a temp GOBIN. The
// version of a source build is `git describe --always --dirty` of the
// module root when git answers, else "dev-" and the first 12 hex digits of
// the binary's sha256. A failed build leaves the catalog unchanged and
// returns an error wrapping ErrBuild that carries the tail of the
// compiler's output. ctx cancels the build (the go command is killed).
func (c *Catalog) Build(ctx context.Context, opts BuildOptions) (Entry, error) {
	if opts.Type == "" {
		opts.Type = TypeCPU
	}
	t, err := c.Type(opts.Type)
	if err != nil {
		return Entry{}, err
	}
	if !t.Buildable() {
		return Entry{}, fmt.Errorf("%w: %q", ErrNotBuildable, t.Name)
	}
	if (opts.SourceDir == "") == (opts.ModuleVersion == "") {
		return Entry{}, fmt.Errorf("%w: set exactly one of SourceDir and ModuleVersion", ErrBadName)
	}
	if opts.GoBinary == "" {
		opts.GoBinary = "go"
	}
	if opts.OS == "" {
		opts.OS = runtime.GOOS
	}
	if opts.Arch == "" {
		opts.Arch = runtime.GOARCH
	}
	if err := validNames(t.Name, "x", opts.OS, opts.Arch, false); err != nil {
		return Entry{}, err
	}
	if opts.ModuleVersion != "" && (opts.OS != runtime.GOOS || opts.Arch != runtime.GOARCH) {
		return Entry{}, fmt.Errorf("%w: a module build cannot cross-compile; build from a source tree", ErrNotBuildable)
	}
	out := opts.Output
	if out == nil {
		out = func(string) {}
	}
	tmp, err := os.MkdirTemp(c.dir, tmpPrefix+"build-")
	if err != nil {
		return Entry{}, fmt.Errorf("catalog: %w", err)
	}
	defer os.RemoveAll(tmp)

	var bin, version string
	if opts.SourceDir != "" {
		bin, version, err = c.buildSource(ctx, t, opts, tmp, out)
	} else {
		bin, version, err = c.buildModule(ctx, t, opts, tmp, out)
	}
	if err != nil {
		return Entry{}, err
	}
	if version == "" {
		sum, err := fileSHA256(bin)
		if err != nil {
			return Entry{}, err
		}
		version = "dev-" + sum[:12]
	}
	if err := ValidName("version", version); err != nil {
		return Entry{}, err
	}
	out(fmt.Sprintf("adding %s %s to the catalog", t.Name, version))
	return c.Add(ctx, AddOptions{Type: t.Name, Version: version, OS: opts.OS, Arch: opts.Arch, Source: SourceBuilt}, bin)
}

func (c *Catalog) buildSource(ctx context.Context, t WorkerType, opts BuildOptions, tmp string, out func(string)) (bin, version string, err error) {
	src, err := filepath.Abs(opts.SourceDir)
	if err != nil {
		return "", "", fmt.Errorf("%w: %v", ErrBuild, err)
	}
	if fi, err := os.Stat(src); err != nil || !fi.IsDir() {
		return "", "", fmt.Errorf("%w: source dir %s is not a directory", ErrBuild, src)
	}
	gomod, err := goOutput(ctx, opts, src, "env", "GOMOD")
	if err != nil {
		return "", "", err
	}
	if gomod == "" || gomod == os.DevNull {
		return "", "", fmt.Errorf("%w: %s is not inside a Go module", ErrBuild, src)
	}
	root := filepath.Dir(gomod)
	bin = filepath.Join(tmp, t.BinaryName(opts.OS))
	out(fmt.Sprintf("building %s for %s/%s in %s", t.Package, opts.OS, opts.Arch, root))
	if err := runGo(ctx, opts, root, nil, out, "build", "-v", "-trimpath", "-o", bin, t.Package); err != nil {
		return "", "", err
	}
	return bin, gitDescribe(ctx, root), nil
}

func (c *Catalog) buildModule(ctx context.Context, t WorkerType, opts BuildOptions, tmp string, out func(string)) (bin, version string, err error) {
	v := opts.ModuleVersion
	if v != "latest" {
		if err := ValidName("version", v); err != nil {
			return "", "", err
		}
	}
	pkg := t.Module + "/" + strings.TrimPrefix(strings.TrimPrefix(t.Package, "./"), "/")
	gobin := filepath.Join(tmp, "bin")
	if err := os.Mkdir(gobin, 0o755); err != nil {
		return "", "", fmt.Errorf("catalog: %w", err)
	}
	// A directory outside any module, so the go command is in module-aware
	// "install a version" mode whatever the node's working directory is.
	work := filepath.Join(tmp, "work")
	if err := os.Mkdir(work, 0o755); err != nil {
		return "", "", fmt.Errorf("catalog: %w", err)
	}
	out(fmt.Sprintf("installing %s@%s", pkg, v))
	if err := runGo(ctx, opts, work, []string{"GOBIN=" + gobin, "GO111MODULE=on", "GOWORK=off"}, out,
		"install", "-v", "-trimpath", pkg+"@"+v); err != nil {
		return "", "", err
	}
	bin = filepath.Join(gobin, t.BinaryName(runtime.GOOS))
	if _, err := os.Stat(bin); err != nil {
		return "", "", fmt.Errorf("%w: go install produced no %s", ErrBuild, filepath.Base(bin))
	}
	// The resolved version ("latest" → v0.2.0) comes from the binary's
	// build info.
	resolved, err := goOutput(ctx, opts, work, "version", "-m", bin)
	if err == nil {
		for _, line := range strings.Split(resolved, "\n") {
			f := strings.Fields(line)
			if len(f) >= 3 && f[0] == "mod" && f[1] == t.Module {
				return bin, f[2], nil
			}
		}
	}
	if v == "latest" {
		return bin, "", nil
	}
	return bin, v, nil
}

// goEnv is the environment of the go command.
func goEnv(opts BuildOptions, extra []string) []string {
	env := append(os.Environ(), opts.Env...)
	env = append(env, extra...)
	// The entry is recorded for opts.OS/Arch, so the binary is built for
	// them whatever GOOS/GOARCH the environment names; later values win.
	goos, goarch := opts.OS, opts.Arch
	if goos == "" {
		goos = runtime.GOOS
	}
	if goarch == "" {
		goarch = runtime.GOARCH
	}
	return append(env, "CGO_ENABLED=0", "GOOS="+goos, "GOARCH="+goarch)
}

// goOutput runs a short go subcommand and returns its trimmed stdout.
func goOutput(ctx context.Context, opts BuildOptions, dir string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, opts.GoBinary, args...)
	cmd.Dir = dir
	cmd.Env = goEnv(opts, nil)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	b, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%w: go %s: %v: %s", ErrBuild, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(string(b)), nil
}

// runGo runs the go command, streaming its output lines to out and keeping
// a bounded tail for the error.
func runGo(ctx context.Context, opts BuildOptions, dir string, extraEnv []string, out func(string), args ...string) error {
	cmd := exec.CommandContext(ctx, opts.GoBinary, args...)
	cmd.Dir = dir
	cmd.Env = goEnv(opts, extraEnv)
	pr, pw := io.Pipe()
	cmd.Stdout = pw
	cmd.Stderr = pw
	// The compiler's children may outlive a killed go command and hold the
	// pipe open; WaitDelay bounds how long Run waits for them.
	cmd.WaitDelay = waitDelay
	tail := &tailBuffer{max: buildTailBytes}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			tail.add(line)
			out(line)
		}
		// Drain whatever a too-long line left, so the go command never
		// blocks on a full pipe.
		_, _ = io.Copy(io.Discard, pr)
	}()
	err := cmd.Run()
	pw.Close()
	wg.Wait()
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("%w: go %s: %w", ErrBuild, args[0], ctx.Err())
		}
		return fmt.Errorf("%w: go %s: %v\n%s", ErrBuild, args[0], err, tail.String())
	}
	return nil
}

// gitDescribe returns `git describe --always --dirty` of dir, or "" when
// git is missing, dir is not a repository, or the answer is not a valid
// version name.
func gitDescribe(ctx context.Context, dir string) string {
	cmd := exec.CommandContext(ctx, "git", "describe", "--always", "--dirty")
	cmd.Dir = dir
	b, err := cmd.Output()
	if err != nil {
		return ""
	}
	v := strings.TrimSpace(string(b))
	if ValidName("version", v) != nil {
		return ""
	}
	return v
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("catalog: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("catalog: %w", err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// tailBuffer keeps the last max bytes of lines.
type tailBuffer struct {
	mu    sync.Mutex
	max   int
	lines []string
	size  int
}

func (t *tailBuffer) add(line string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lines = append(t.lines, line)
	t.size += len(line) + 1
	for t.size > t.max && len(t.lines) > 1 {
		t.size -= len(t.lines[0]) + 1
		t.lines = t.lines[1:]
	}
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.Join(t.lines, "\n")
}
