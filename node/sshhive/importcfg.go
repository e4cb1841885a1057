package sshhive

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"unicode"

	"github.com/kevinburke/ssh_config"

	"github.com/rbee-project/rbee/fsm"
	"github.com/rbee-project/rbee/internal/atomicfile"
	"github.com/rbee-project/rbee/internal/humanize"
	"github.com/rbee-project/rbee/internal/limitread"
)

// Bounds on what an import reads: an ssh config is a few KiB; these stop a
// wrong path (a log, a device) or an Include loop from eating memory.
const (
	maxConfigBytes   = 1 << 20 // per file
	maxIncludeDepth  = 16      // OpenSSH's READCONF_MAX_DEPTH
	maxIncludedFiles = 256
)

// ImportOptions controls ImportConfig.
type ImportOptions struct {
	// Home is the local user's home directory: "~" in IdentityFile and
	// Include, and relative Include paths (against Home/.ssh), resolve
	// against it. Required when the config uses either.
	Home string
	// DefaultUser is the login for hosts without a User setting (OpenSSH
	// uses the local user name). Empty leaves User empty.
	DefaultUser string
	// Overwrite replaces inventory entries of the same name (their State
	// and InstallPath are kept); without it they are skipped.
	Overwrite bool
}

// SkippedHost is a config host ImportConfig did not add, and why.
type SkippedHost struct {
	Host   fsm.Host
	Reason string
}

// ImportResult says what an import would change. The node applies Added
// and Updated to the registry.
type ImportResult struct {
	Added   []fsm.Host
	Updated []fsm.Host
	Skipped []SkippedHost
	// Warnings are settings the import cannot honour (Match blocks,
	// ProxyJump, ...), one line each.
	Warnings []string
}

// ImportConfigFile reads the OpenSSH client config at path (empty:
// Home/.ssh/config; a leading "~/" expands against Home) and calls
// ImportConfig.
func ImportConfigFile(path string, existing []fsm.Host, opts ImportOptions) (ImportResult, error) {
	if path == "" {
		if opts.Home == "" {
			return ImportResult{}, fmt.Errorf("%w: no ssh config path and no home directory", ErrInvalid)
		}
		path = filepath.Join(opts.Home, ".ssh", "config")
	}
	path = expandTilde(path, opts.Home)
	f, err := openRegular(path)
	if err != nil {
		return ImportResult{}, fmt.Errorf("ssh config: %w", err)
	}
	defer f.Close()
	return ImportConfig(f, existing, opts)
}

// openRegular opens path for reading only if it is a regular file. It
// never blocks: a FIFO or a device is opened non-blocking, found not to be
// a file and closed (an open of a FIFO for reading would wait for a
// writer for ever, holding the request's goroutine and an OS thread).
func openRegular(path string) (*os.File, error) {
	f, err := atomicfile.Open(path)
	if errors.Is(err, atomicfile.ErrNotRegular) {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return f, err
}

// ImportConfig reads an OpenSSH client config from r and returns the
// concrete hosts it names (patterns with * or ? and negations are not hosts,
// but their settings apply to the hosts they match), resolved the way ssh
// does: first value wins, Host blocks in file order, Include in place.
// Entries already in existing are skipped unless opts.Overwrite; entries
// identical to the inventory are skipped as unchanged. New entries have
// State known. A config that does not parse is an error (ErrInvalid).
func ImportConfig(r io.Reader, existing []fsm.Host, opts ImportOptions) (ImportResult, error) {
	var res ImportResult
	b, err := io.ReadAll(io.LimitReader(r, maxConfigBytes+1))
	if err != nil {
		return res, fmt.Errorf("ssh config: %w", err)
	}
	if len(b) > maxConfigBytes {
		return res, fmt.Errorf("%w: ssh config larger than %d bytes", ErrInvalid, maxConfigBytes)
	}
	l := &cfgLoader{home: opts.Home, warn: func(s string) { res.Warnings = append(res.Warnings, s) }}
	root, err := l.parse(b, "ssh config", 0)
	if err != nil {
		return res, err
	}

	var names []string
	root.hostNames(&names)
	have := make(map[string]fsm.Host, len(existing))
	for _, h := range existing {
		have[h.Name] = h
	}
	for _, name := range names {
		v := map[string][]string{}
		root.eval(name, v)
		h, reason := hostFrom(name, v, opts)
		if reason != "" {
			res.Skipped = append(res.Skipped, SkippedHost{Host: h, Reason: reason})
			continue
		}
		for _, k := range []string{"proxyjump", "proxycommand"} {
			if p := first(v, k); p != "" && !strings.EqualFold(p, "none") {
				res.Warnings = append(res.Warnings, fmt.Sprintf("host %s: %s is not supported; it is imported but may be unreachable directly", name, k))
			}
		}
		// Host key settings rbee does not follow: it checks every host
		// against the node's known_hosts under the address it dials, and
		// records unknown keys only with --accept-new.
		for _, k := range []string{"UserKnownHostsFile", "GlobalKnownHostsFile", "HostKeyAlias", "StrictHostKeyChecking"} {
			p := first(v, strings.ToLower(k))
			if p != "" && !(k == "StrictHostKeyChecking" && slices.Contains([]string{"yes", "ask"}, strings.ToLower(p))) {
				res.Warnings = append(res.Warnings, fmt.Sprintf("host %s: %s %s is not followed; rbee checks its key against the node's known_hosts "+
					"under its address (an unknown key needs ssh-test --accept-new; a changed one is always refused)", name, k, humanize.Clip(p, 80)))
			}
		}
		old, ok := have[name]
		switch {
		case !ok:
			res.Added = append(res.Added, h)
		case sameConnection(old, h):
			res.Skipped = append(res.Skipped, SkippedHost{Host: old, Reason: "already in the inventory, unchanged"})
		case !opts.Overwrite:
			res.Skipped = append(res.Skipped, SkippedHost{Host: h, Reason: fmt.Sprintf(
				"already in the inventory as %s; use --overwrite to replace it", describeHost(old))})
		default:
			u := old
			u.Host, u.Port, u.User, u.IdentityFile = h.Host, h.Port, h.User, h.IdentityFile
			res.Updated = append(res.Updated, u)
		}
	}
	return res, nil
}

func describeHost(h fsm.Host) string {
	s := h.Host
	if h.User != "" {
		s = h.User + "@" + s
	}
	if h.Port != 0 {
		s += ":" + strconv.Itoa(h.Port)
	}
	if h.IdentityFile != "" {
		s += " (key " + h.IdentityFile + ")"
	}
	return s
}

func sameConnection(a, b fsm.Host) bool {
	return a.Host == b.Host && a.Port == b.Port && a.User == b.User && a.IdentityFile == b.IdentityFile
}

func first(v map[string][]string, k string) string {
	if s := v[k]; len(s) > 0 {
		return s[0]
	}
	return ""
}

// hostFrom builds the inventory entry for alias from its resolved settings;
// a non-empty reason means it cannot be imported.
func hostFrom(alias string, v map[string][]string, opts ImportOptions) (fsm.Host, string) {
	h := fsm.Host{Name: alias, Host: alias, State: fsm.HostKnown, User: first(v, "user")}
	if h.User == "" {
		h.User = opts.DefaultUser
	}
	if hn := first(v, "hostname"); hn != "" {
		h.Host = percentExpand(hn, alias, h.User, opts)
	}
	if p := first(v, "port"); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return h, fmt.Sprintf("Port %q is not a port number", p)
		}
		if n != DefaultPort {
			h.Port = n
		}
	}
	for _, id := range v["identityfile"] {
		if strings.EqualFold(id, "none") {
			continue
		}
		h.IdentityFile = expandTilde(percentExpand(id, h.Host, h.User, opts), opts.Home)
		break
	}
	switch {
	case len(alias) > 253 || strings.ContainsFunc(alias, badNameRune):
		return h, "the name is not a host name (too long, or has spaces or control characters)"
	case h.Host == "" || len(h.Host) > 253 || strings.ContainsFunc(h.Host, badNameRune):
		return h, fmt.Sprintf("HostName %q is not a host name", h.Host)
	case strings.ContainsFunc(h.User, badNameRune) || len(h.User) > 256:
		return h, fmt.Sprintf("User %q is not a user name", h.User)
	case len(h.IdentityFile) > 4096 || strings.ContainsFunc(h.IdentityFile, unicode.IsControl):
		return h, "IdentityFile is not a usable path"
	}
	return h, ""
}

func badNameRune(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }

// percentExpand expands the ssh_config tokens that make sense here: %h (host
// name), %r (remote user), %u (local user), %d (local home), %%.
func percentExpand(s, host, user string, opts ImportOptions) string {
	if !strings.Contains(s, "%") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		i++
		switch s[i] {
		case 'h':
			b.WriteString(host)
		case 'r':
			b.WriteString(user)
		case 'u':
			b.WriteString(opts.DefaultUser)
		case 'd':
			b.WriteString(opts.Home)
		case '%':
			b.WriteByte('%')
		default:
			b.WriteByte('%')
			b.WriteByte(s[i])
		}
	}
	return b.String()
}

func expandTilde(p, home string) string {
	switch {
	case home == "":
		return p
	case p == "~":
		return home
	case strings.HasPrefix(p, "~/"):
		return filepath.Join(home, p[2:])
	}
	return p
}

// Directives the loader handles itself before the ssh_config parser sees
// the text: Include (the library resolves it against the process's own home
// and reads files as it parses) and Match (only partly supported there).
var reDirective = sync.OnceValue(func() *regexp.Regexp {
	return regexp.MustCompile(`(?im)^([ \t]*)(include|match)([ \t]*=[ \t]*|[ \t]+)(.*)$`)
})

const (
	includeKey = "RbeeInclude"
	// matchMarker is appended to the Host line a Match line becomes: a
	// negated pattern no real alias equals, so it changes no match, and it
	// tells the block apart from a real Host line (whose names are hosts).
	matchMarker = "!rbee-match-block.invalid"
)

type cfgLoader struct {
	home  string
	warn  func(string)
	files int
	// includes are the Include values as written, quotes and all (the
	// parser below drops quotes, which would split a quoted path with a
	// space): the config holds their index instead.
	includes []string
}

// cfgFile is one parsed file: its blocks in order, the first being the
// implicit "Host *" before any Host line.
type cfgFile struct {
	blocks []cfgBlock
}

type cfgBlock struct {
	host      *ssh_config.Host
	concrete  bool // a Host line (not Match, not the implicit block)
	items     []cfgItem
	hostNames []string
}

type cfgItem struct {
	key, value string     // lower-case key
	include    []*cfgFile // for Include
}

func (l *cfgLoader) parse(b []byte, name string, depth int) (*cfgFile, error) {
	if depth > maxIncludeDepth {
		return nil, fmt.Errorf("%w: %s: Include nested deeper than %d", ErrInvalid, name, maxIncludeDepth)
	}
	text := reDirective().ReplaceAllFunc(b, func(m []byte) []byte {
		g := reDirective().FindSubmatch(m)
		indent, kw, sep, rest := g[1], strings.ToLower(string(g[2])), g[3], strings.TrimSpace(string(g[4]))
		if kw == "include" {
			l.includes = append(l.includes, string(g[4]))
			return slices.Concat(indent, []byte(includeKey), sep, []byte(strconv.Itoa(len(l.includes)-1)))
		}
		f := strings.Fields(stripComment(rest))
		switch {
		case len(f) == 1 && strings.EqualFold(f[0], "all"):
			return []byte("Host * " + matchMarker)
		case len(f) == 2 && strings.EqualFold(f[0], "host"):
			return []byte("Host " + strings.ReplaceAll(f[1], ",", " ") + " " + matchMarker)
		}
		l.warn(fmt.Sprintf("%s: Match %s is not evaluated; its settings are ignored", name, rest))
		return []byte("Host !* " + matchMarker)
	})

	cfg, err := decodeSSHConfig(text)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrInvalid, name, err)
	}
	out := &cfgFile{}
	for i, h := range cfg.Hosts {
		blk := cfgBlock{host: h, concrete: i > 0 && !slices.ContainsFunc(h.Patterns, func(p *ssh_config.Pattern) bool {
			return p.String() == matchMarker
		})}
		if blk.concrete {
			for _, p := range h.Patterns {
				s := p.String()
				switch {
				case strings.ContainsAny(s, "*?!"):
				case strings.ContainsAny(s, "\"'/\\") || strings.HasPrefix(s, "-"):
					// A quoted pattern (this parser splits "a b" in two),
					// a path or a flag is no host a hive can be named by.
					l.warn(fmt.Sprintf("%s: Host %q is not imported: a hive name has no quotes or slashes and does not start with '-'", name, s))
				default:
					blk.hostNames = append(blk.hostNames, s)
				}
			}
		}
		for _, n := range h.Nodes {
			kv, ok := n.(*ssh_config.KV)
			if !ok {
				continue
			}
			it := cfgItem{key: strings.ToLower(kv.Key), value: kv.Value}
			if it.key == strings.ToLower(includeKey) {
				i, err := strconv.Atoi(strings.TrimSpace(kv.Value))
				if err != nil || i < 0 || i >= len(l.includes) {
					return nil, fmt.Errorf("%w: %s: a malformed Include", ErrInvalid, name)
				}
				it.value = l.includes[i]
				inc, err := l.include(l.includes[i], depth)
				if err != nil {
					return nil, err
				}
				it.include = inc
			}
			blk.items = append(blk.items, it)
		}
		out.blocks = append(out.blocks, blk)
	}
	return out, nil
}

func stripComment(s string) string {
	if i := strings.IndexByte(s, '#'); i >= 0 {
		return strings.TrimSpace(s[:i])
	}
	return s
}

// include resolves an Include value (several space-separated globs) the way
// ssh does: absolute paths as they are, "~/" against home, others against
// home/.ssh; each glob's matches in lexical order; no match is no error.
func (l *cfgLoader) include(value string, depth int) ([]*cfgFile, error) {
	var out []*cfgFile
	for _, pat := range splitWords(value) {
		switch {
		case filepath.IsAbs(pat):
		case strings.HasPrefix(pat, "~"):
			if l.home == "" {
				return nil, fmt.Errorf("%w: Include %s needs a home directory", ErrInvalid, pat)
			}
			pat = expandTilde(pat, l.home)
		default:
			if l.home == "" {
				return nil, fmt.Errorf("%w: relative Include %s needs a home directory", ErrInvalid, pat)
			}
			pat = filepath.Join(l.home, ".ssh", pat)
		}
		matches, err := filepath.Glob(pat)
		if err != nil {
			return nil, fmt.Errorf("%w: Include %s: %v", ErrInvalid, pat, err)
		}
		sort.Strings(matches)
		for _, m := range matches {
			if st, err := os.Stat(m); err == nil && st.IsDir() {
				continue
			}
			l.files++
			if l.files > maxIncludedFiles {
				return nil, fmt.Errorf("%w: more than %d included files", ErrInvalid, maxIncludedFiles)
			}
			b, err := readBounded(m)
			if err != nil {
				return nil, err
			}
			f, err := l.parse(b, m, depth+1)
			if err != nil {
				return nil, err
			}
			out = append(out, f)
		}
	}
	return out, nil
}

func readBounded(path string) ([]byte, error) {
	f, err := openRegular(path)
	if err != nil {
		return nil, fmt.Errorf("ssh config Include: %w", err)
	}
	defer f.Close()
	b, err := limitread.All(f, maxConfigBytes)
	switch {
	case errors.Is(err, limitread.ErrTooLarge):
		return nil, fmt.Errorf("%w: %s larger than %d bytes", ErrInvalid, path, maxConfigBytes)
	case err != nil:
		return nil, fmt.Errorf("ssh config Include %s: %w", path, err)
	}
	return b, nil
}

// hostNames appends the concrete host names of f (and its includes), in
// order, without duplicates.
func (f *cfgFile) hostNames(out *[]string) {
	for _, b := range f.blocks {
		for _, n := range b.hostNames {
			if !slices.Contains(*out, n) {
				*out = append(*out, n)
			}
		}
		for _, it := range b.items {
			for _, inc := range it.include {
				inc.hostNames(out)
			}
		}
	}
}

// eval collects the settings that apply to alias into v (lower-case keys):
// blocks whose patterns match, in order; Include files only inside matching
// blocks. The first value of a key wins, which callers get as v[k][0];
// IdentityFile keeps all.
func (f *cfgFile) eval(alias string, v map[string][]string) {
	for _, b := range f.blocks {
		if !b.host.Matches(alias) {
			continue
		}
		for _, it := range b.items {
			if it.include != nil || it.key == strings.ToLower(includeKey) {
				for _, inc := range it.include {
					inc.eval(alias, v)
				}
				continue
			}
			if it.key == "identityfile" || len(v[it.key]) == 0 {
				v[it.key] = append(v[it.key], it.value)
			}
		}
	}
}

// decodeSSHConfig parses with the library, turning any panic it lets
// through (it re-panics runtime errors) into an error: bad input must not
// crash the node.
func decodeSSHConfig(b []byte) (cfg *ssh_config.Config, err error) {
	defer func() {
		if r := recover(); r != nil {
			cfg, err = nil, fmt.Errorf("parser failure: %v", r)
		}
	}()
	return ssh_config.DecodeBytes(b)
}

// splitWords splits a line into words as ssh splits a config value
// (argv_split) and a shell the run script's line (shellQuote's quoting):
// blanks separate words; a single- or double-quoted part is kept whole
// without its quotes; outside quotes a backslash keeps the next character.
// So `Include "/a dir/*.conf"` names one path.
func splitWords(v string) []string {
	var words []string
	var cur strings.Builder
	var quote byte
	has := false
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case quote != 0 && c == quote:
			quote = 0
		case quote != 0:
			cur.WriteByte(c)
		case c == '"' || c == '\'':
			quote, has = c, true
		case c == '\\' && i+1 < len(v):
			i++
			cur.WriteByte(v[i])
			has = true
		case c == ' ' || c == '\t':
			if has {
				words = append(words, cur.String())
				cur.Reset()
				has = false
			}
		default:
			cur.WriteByte(c)
			has = true
		}
	}
	if has {
		words = append(words, cur.String())
	}
	return words
}
