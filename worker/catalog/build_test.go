package catalog

import (
	"archive/zip"
	"context"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// lines collects Output lines from the build goroutine.
type lines struct {
	mu sync.Mutex
	l  []string
}

func (l *lines) add(s string) { l.mu.Lock(); l.l = append(l.l, s); l.mu.Unlock() }
func (l *lines) all() string  { l.mu.Lock(); defer l.mu.Unlock(); return strings.Join(l.l, "\n") }

// tempModule writes a module github.com/rbee-project/rbee whose
// cmd/rbee-worker has the given main.go.
func tempModule(t *testing.T, main string) string {
	t.Helper()
	root := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(root, "go.mod"), []byte("module "+RbeeModule+"\n\ngo 1.26\n"), 0o644))
	require.NoError(t, os.MkdirAll(filepath.Join(root, "cmd", "rbee-worker"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(root, "cmd", "rbee-worker", "main.go"), []byte(main), 0o644))
	return root
}

const helloMain = "package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"hello from the temp worker\") }\n"

func TestBuildFromRepository(t *testing.T) {
	if testing.Short() {
		t.Skip("builds cmd/rbee-worker")
	}
	dir := t.TempDir()
	c := newCatalog(t, dir, nil)
	var out lines
	// Any directory inside the module will do: the root is found via go env GOMOD.
	e, err := c.Build(context.Background(), BuildOptions{SourceDir: ".", Output: out.add})
	require.NoError(t, err, out.all())
	assert.Equal(t, SourceBuilt, e.Source)
	assert.Equal(t, "rbee-worker", e.Binary)
	require.NoError(t, ValidName("version", e.Version))
	assert.Contains(t, out.all(), "building ./cmd/rbee-worker for "+runtime.GOOS+"/"+runtime.GOARCH+" in ")
	assert.Contains(t, out.all(), "adding cpu "+e.Version)
	sum, err := fileSHA256(e.Path)
	require.NoError(t, err)
	assert.Equal(t, e.SHA256, sum)
	// The built binary is the worker: -h prints its usage and exits 0.
	usage, err := exec.Command(e.Path, "-h").CombinedOutput()
	require.NoError(t, err, string(usage))
	assert.Contains(t, string(usage), "-model")
	got, err := c.Get(TypeCPU, "")
	require.NoError(t, err)
	assert.Equal(t, e.Path, got.Path)
}

// A source build cross-compiles: the entry is recorded for the target
// platform and the file is an executable of that architecture.
func TestBuildCrossCompiles(t *testing.T) {
	root := tempModule(t, helloMain)
	c := newCatalog(t, t.TempDir(), nil)
	target, machine := "arm64", elf.EM_AARCH64
	if runtime.GOARCH == "arm64" {
		target, machine = "amd64", elf.EM_X86_64
	}
	e, err := c.Build(context.Background(), BuildOptions{SourceDir: root, OS: "linux", Arch: target})
	require.NoError(t, err)
	assert.Equal(t, "linux", e.OS)
	assert.Equal(t, target, e.Arch)
	f, err := elf.Open(e.Path)
	require.NoError(t, err)
	defer f.Close()
	assert.Equal(t, machine, f.Machine)
	_, err = c.Lookup(TypeCPU, "", "linux", target)
	require.NoError(t, err)
	_, err = c.Build(context.Background(), BuildOptions{SourceDir: root, OS: "../x", Arch: target})
	require.ErrorIs(t, err, ErrBadName)
}

func TestBuildTempModule(t *testing.T) {
	dir := t.TempDir()
	c := newCatalog(t, dir, nil)
	ctx := context.Background()
	src := tempModule(t, helloMain)

	var out lines
	// GOOS/GOARCH in the environment cannot make it build for another
	// platform than the one the entry is recorded for.
	e, err := c.Build(ctx, BuildOptions{SourceDir: filepath.Join(src, "cmd"), Output: out.add,
		Env: []string{"GOTOOLCHAIN=local", "GOOS=plan9", "GOARCH=386"}})
	require.NoError(t, err, out.all())
	// Not a git repository: the version comes from the binary's hash.
	assert.Equal(t, "dev-"+e.SHA256[:12], e.Version)
	b, err := exec.Command(e.Path).Output()
	require.NoError(t, err)
	assert.Equal(t, "hello from the temp worker\n", string(b))

	// A syntax error: the build fails with the compiler's text, streamed
	// and in the error, and the catalog is unchanged.
	before := files(t, dir)
	bad := tempModule(t, "package main\n\nfunc main() {\n\tx := \n}\n")
	out = lines{}
	_, err = c.Build(ctx, BuildOptions{SourceDir: bad, Output: out.add, Env: []string{"GOTOOLCHAIN=local"}})
	require.ErrorIs(t, err, ErrBuild)
	assert.Contains(t, err.Error(), "main.go:5")
	assert.Contains(t, err.Error(), "syntax error")
	assert.Contains(t, out.all(), "syntax error")
	assert.Equal(t, before, files(t, dir))
	assert.Len(t, c.List(), 1)

	tests := []struct {
		name string
		opts BuildOptions
		want error
	}{
		{"not a module", BuildOptions{SourceDir: t.TempDir()}, ErrBuild},
		{"missing dir", BuildOptions{SourceDir: filepath.Join(src, "nope")}, ErrBuild},
		{"no go command", BuildOptions{SourceDir: src, GoBinary: filepath.Join(t.TempDir(), "go")}, ErrBuild},
		{"neither source", BuildOptions{}, ErrBadName},
		{"both sources", BuildOptions{SourceDir: src, ModuleVersion: "v1"}, ErrBadName},
		{"hostile module version", BuildOptions{ModuleVersion: "v1 -toolexec=evil"}, ErrBadName},
		{"unknown type", BuildOptions{Type: "cuda", SourceDir: src}, ErrUnknownType},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.opts.Env = []string{"GOTOOLCHAIN=local"}
			_, err := c.Build(ctx, tt.opts)
			require.ErrorIs(t, err, tt.want)
			assert.Equal(t, before, files(t, dir))
		})
	}

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_, err = c.Build(cctx, BuildOptions{SourceDir: src})
	require.Error(t, err)
	assert.Equal(t, before, files(t, dir))
}

// writeProxy lays out a file:// GOPROXY holding RbeeModule at version v.
func writeProxy(t *testing.T, v, main string) string {
	t.Helper()
	proxy := t.TempDir()
	d := filepath.Join(proxy, filepath.FromSlash(RbeeModule), "@v")
	require.NoError(t, os.MkdirAll(d, 0o755))
	mod := "module " + RbeeModule + "\n\ngo 1.26\n"
	require.NoError(t, os.WriteFile(filepath.Join(d, "list"), []byte(v+"\n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(d, v+".info"), []byte(`{"Version":"`+v+`","Time":"2026-01-02T03:04:05Z"}`), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(d, v+".mod"), []byte(mod), 0o644))
	f, err := os.Create(filepath.Join(d, v+".zip"))
	require.NoError(t, err)
	zw := zip.NewWriter(f)
	for name, body := range map[string]string{"go.mod": mod, "cmd/rbee-worker/main.go": main} {
		w, err := zw.Create(RbeeModule + "@" + v + "/" + name)
		require.NoError(t, err)
		_, err = w.Write([]byte(body))
		require.NoError(t, err)
	}
	require.NoError(t, zw.Close())
	require.NoError(t, f.Close())
	return proxy
}

func TestBuildModuleVersion(t *testing.T) {
	proxy := writeProxy(t, "v0.3.1", helloMain)
	env := []string{
		"GOPROXY=file://" + filepath.ToSlash(proxy), "GOSUMDB=off", "GOTOOLCHAIN=local",
		"GOMODCACHE=" + t.TempDir(), "GOFLAGS=-modcacherw",
	}
	dir := t.TempDir()
	c := newCatalog(t, dir, nil)
	ctx := context.Background()
	for _, v := range []string{"v0.3.1", "latest"} {
		var out lines
		e, err := c.Build(ctx, BuildOptions{ModuleVersion: v, Env: env, Output: out.add})
		require.NoError(t, err, out.all())
		assert.Equal(t, "v0.3.1", e.Version, "resolved from the binary's build info")
		assert.Contains(t, out.all(), "installing "+RbeeModule+"/cmd/rbee-worker@"+v)
		b, err := exec.Command(e.Path).Output()
		require.NoError(t, err)
		assert.Equal(t, "hello from the temp worker\n", string(b))
	}
	assert.Len(t, c.List(), 1)

	before := files(t, dir)
	_, err := c.Build(ctx, BuildOptions{ModuleVersion: "v9.9.9", Env: env})
	require.ErrorIs(t, err, ErrBuild)
	assert.Contains(t, err.Error(), "v9.9.9")
	assert.Equal(t, before, files(t, dir))
}
