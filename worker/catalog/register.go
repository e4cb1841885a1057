package catalog

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"
)

// RegisterOptions describe an engine binary the user installed.
type RegisterOptions struct {
	// Type is an external type (llama-server, vllm, ollama, openai).
	Type string
	// Version defaults to DefaultRegisteredVersion.
	Version string
	// Path is the executable: absolute, an existing regular file with an
	// execute bit that only its owner and group may write (neither it nor
	// a directory above it is world-writable, sticky directories such as
	// /tmp aside). It stays where it is (engines come with shared
	// libraries next to them), and Delete never removes it.
	Path string
	// Template is the command template (required for the generic type,
	// refused for the others: see ParseTemplate).
	Template string
	// HealthPath overrides the type's health path ("/health"); it must
	// start with "/".
	HealthPath string
	// Devices the binary can drive ("cuda", "rocm", "vulkan", "metal",
	// "cpu"); informational.
	Devices []string
	// Pin makes the entry the default of its type (see Default).
	Pin bool
}

// DefaultRegisteredVersion is the version of a registered engine when the
// user names none: engines version themselves in their own ways.
const DefaultRegisteredVersion = "local"

// knownDevices are the device kinds an engine may be registered for.
var knownDevices = []string{"cpu", "cuda", "rocm", "vulkan", "metal"}

// checkExecutable reports whether path is an absolute path to an existing
// regular file with an execute bit.
func checkExecutable(path string) error {
	if !filepath.IsAbs(path) {
		return fmt.Errorf("%w: %q is not an absolute path", ErrNotExecutable, path)
	}
	fi, err := os.Stat(path)
	switch {
	case err != nil:
		return fmt.Errorf("%w: %s: no such file", ErrNotExecutable, path)
	case !fi.Mode().IsRegular():
		return fmt.Errorf("%w: %s is not a regular file", ErrNotExecutable, path)
	case runtime.GOOS != "windows" && fi.Mode().Perm()&0o111 == 0:
		return fmt.Errorf("%w: %s is not executable", ErrNotExecutable, path)
	}
	if runtime.GOOS == "windows" {
		return nil
	}
	// The node runs the file as its own user: anyone who can change it,
	// or replace it in its directory, could run code as the node.
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrNotExecutable, path, err)
	}
	w := othersCanWrite(real)
	if w == "" {
		// A symlink's directory: the link could be pointed elsewhere.
		w = othersCanWrite(filepath.Dir(filepath.Clean(path)))
	}
	if w != "" {
		return fmt.Errorf("%w: %s: any user can write %s (chmod o-w it)", ErrNotExecutable, path, w)
	}
	if o := ownedByOthers(real); o != "" {
		return fmt.Errorf("%w: %s: %s belongs to another user, who could change it (it must be root's or the node's user's)", ErrNotExecutable, path, o)
	}
	return nil
}

// ownedByOthers returns path, or the first directory above it, that
// belongs to a user other than root and the node's: its owner could
// rewrite the file, or replace it in its directory, whatever the modes
// (OpenSSH's rule for the files it trusts). "" if none.
func ownedByOthers(path string) string {
	for p := path; ; p = filepath.Dir(p) {
		if fi, err := os.Stat(p); err == nil && foreignOwner(fi) {
			return p
		}
		if p == filepath.Dir(p) {
			return ""
		}
	}
}

// othersCanWrite returns path, or the first directory above it, that every
// user may write (a world-writable file, or a world-writable directory
// without the sticky bit, where any user may replace its entries); "" if
// none.
func othersCanWrite(path string) string {
	fi, err := os.Stat(path)
	if err == nil && !fi.IsDir() && fi.Mode().Perm()&0o002 != 0 {
		return path
	}
	for dir := path; ; dir = filepath.Dir(dir) {
		if fi, err := os.Stat(dir); err == nil && fi.Mode().Perm()&0o002 != 0 && fi.Mode()&os.ModeSticky == 0 {
			return dir
		}
		if dir == filepath.Dir(dir) {
			return ""
		}
	}
}

// CheckRegister validates opts without touching the catalog (the node
// refuses a bad request with it before a job exists).
func (c *Catalog) CheckRegister(opts RegisterOptions) (WorkerType, error) {
	t, err := c.Type(opts.Type)
	if err != nil {
		return WorkerType{}, err
	}
	if !t.External {
		return WorkerType{}, fmt.Errorf("%w: type %q is not an external engine (build or download it instead)", ErrBadName, t.Name)
	}
	if opts.Version != "" {
		if err := ValidName("version", opts.Version); err != nil {
			return WorkerType{}, err
		}
	}
	switch {
	case t.Generic() && opts.Template == "":
		return WorkerType{}, fmt.Errorf("%w: type %q needs a command template (e.g. '--model {model} --port {port}')", ErrBadName, t.Name)
	case !t.Generic() && opts.Template != "":
		return WorkerType{}, fmt.Errorf("%w: type %q has its own command line; a template is for type %q", ErrBadName, t.Name, TypeOpenAI)
	case opts.Template != "":
		if _, err := ParseTemplate(opts.Template); err != nil {
			return WorkerType{}, err
		}
	}
	if h := opts.HealthPath; h != "" && (!strings.HasPrefix(h, "/") || len(h) > 256 || strings.ContainsAny(h, " \x00\r\n?#")) {
		return WorkerType{}, fmt.Errorf("%w: health path %q (want an absolute URL path such as /health)", ErrBadName, h)
	}
	for _, d := range opts.Devices {
		if !slices.Contains(knownDevices, d) {
			return WorkerType{}, fmt.Errorf("%w: device %q (want one of %s)", ErrBadName, d, strings.Join(knownDevices, ", "))
		}
	}
	if err := checkExecutable(opts.Path); err != nil {
		return WorkerType{}, err
	}
	if err := ValidName("binary", filepath.Base(opts.Path)); err != nil {
		return WorkerType{}, err
	}
	return t, nil
}

// Register records an engine the user installed, where it is (see
// RegisterOptions). Registering the same type and version again replaces
// the record, unless it names another file while a running worker uses
// the recorded one (Config.InUse; ErrInUse, as Delete); a copied (built,
// downloaded, added) binary of that type and version is not replaced:
// pick another version.
func (c *Catalog) Register(opts RegisterOptions) (Entry, error) {
	if _, err := c.CheckRegister(opts); err != nil {
		return Entry{}, err
	}
	if opts.Version == "" {
		opts.Version = DefaultRegisteredVersion
	}
	e := Entry{
		Type: opts.Type, Version: opts.Version, OS: runtime.GOOS, Arch: runtime.GOARCH,
		Binary: filepath.Base(opts.Path), Path: filepath.Clean(opts.Path), Source: SourceRegistered,
		Added: time.Now().UTC(), Devices: slices.Clone(opts.Devices), Template: opts.Template, HealthPath: opts.HealthPath,
	}
	if fi, err := os.Stat(e.Path); err == nil {
		e.Size = fi.Size()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	old, had := c.entries[e.key()]
	if had && old.Source != SourceRegistered {
		return Entry{}, fmt.Errorf("%w: %s %s is already in the catalog as a %s binary; register with another --version", ErrBadName, e.Type, e.Version, old.Source)
	}
	if had && old.Path != e.Path && c.inUse != nil && c.inUse(old) {
		return Entry{}, fmt.Errorf("%w: %s %s is %s, which a running worker uses; register %s with another --version, or retire those workers first",
			ErrInUse, e.Type, e.Version, old.Path, e.Path)
	}
	next := make(map[string]Entry, len(c.entries)+1)
	for k, v := range c.entries {
		if opts.Pin && v.Type == e.Type && v.OS == e.OS && v.Arch == e.Arch {
			v.Pinned = false
		}
		next[k] = v
	}
	e.Pinned = opts.Pin || old.Pinned
	next[e.key()] = e
	if err := c.writeIndex(next); err != nil {
		return Entry{}, err
	}
	c.entries = next
	c.log.Info("engine registered", "type", e.Type, "version", e.Version, "path", e.Path, "devices", e.Devices, "pinned", e.Pinned)
	return e, nil
}
