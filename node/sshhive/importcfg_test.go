package sshhive

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/fsm"
)

// writeHome creates home/.ssh with the given files (relative to .ssh).
func writeHome(t *testing.T, files map[string]string) string {
	t.Helper()
	home := t.TempDir()
	for name, body := range files {
		p := filepath.Join(home, ".ssh", name)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o700))
		require.NoError(t, os.WriteFile(p, []byte(body), 0o600))
	}
	return home
}

const mainConfig = `# hosts of the lab
Include config.d/*.conf

Host gpu1.lan gpu2.lan
    Port 2201

Host db
    HostName 192.168.1.5
    User dbuser
    IdentityFile ~/.ssh/id_db
    IdentityFile ~/.ssh/id_second

Host *.lan
    User lanuser
    Port 2222
    IdentityFile ~/.ssh/id_lan

Host *.lan !gpu2.lan
    HostName %h.internal

Match host db
    Port 2022

Match exec "true"
    Port 9

Host *
    User fallback
`

var includedConfigs = map[string]string{
	"config.d/10-pi.conf": `Host pi
    HostName 192.168.1.50
    ProxyJump bastion
`,
	"config.d/20-nas.conf": `Host nas
    Port notaport
`,
	"config.d/README": "Host not-included\n",
}

func TestImportConfig(t *testing.T) {
	files := map[string]string{"config": mainConfig}
	for k, v := range includedConfigs {
		files[k] = v
	}
	home := writeHome(t, files)

	res, err := ImportConfigFile("", nil, ImportOptions{Home: home, DefaultUser: "me"})
	require.NoError(t, err)

	ssh := filepath.Join(home, ".ssh")
	want := []fsm.Host{
		{Name: "pi", Host: "192.168.1.50", User: "fallback", State: fsm.HostKnown},
		{Name: "gpu1.lan", Host: "gpu1.lan.internal", Port: 2201, User: "lanuser", IdentityFile: filepath.Join(ssh, "id_lan"), State: fsm.HostKnown},
		{Name: "gpu2.lan", Host: "gpu2.lan", Port: 2201, User: "lanuser", IdentityFile: filepath.Join(ssh, "id_lan"), State: fsm.HostKnown},
		{Name: "db", Host: "192.168.1.5", Port: 2022, User: "dbuser", IdentityFile: filepath.Join(ssh, "id_db"), State: fsm.HostKnown},
	}
	require.Equal(t, want, res.Added)
	require.Empty(t, res.Updated)
	require.Len(t, res.Skipped, 1)
	require.Equal(t, "nas", res.Skipped[0].Host.Name)
	require.Contains(t, res.Skipped[0].Reason, `Port "notaport"`)
	require.Len(t, res.Warnings, 2, "%q", res.Warnings)
	require.Contains(t, strings.Join(res.Warnings, "\n"), `Match exec "true" is not evaluated`)
	require.Contains(t, strings.Join(res.Warnings, "\n"), "host pi: proxyjump is not supported")
}

func TestImportConfigExisting(t *testing.T) {
	home := writeHome(t, map[string]string{"config": `
Host same
    HostName 10.0.0.1
    User u
Host changed
    HostName 10.0.0.2
    User u
Host fresh
    HostName 10.0.0.3
    User u
`})
	existing := []fsm.Host{
		{Name: "same", Host: "10.0.0.1", User: "u", State: fsm.HostRunning},
		{Name: "changed", Host: "10.0.0.99", User: "old", State: fsm.HostInstalled, InstallPath: "/opt/rbee"},
	}
	tests := []struct {
		name      string
		overwrite bool
		added     []string
		updated   []fsm.Host
		skipped   map[string]string
	}{
		{"keep", false, []string{"fresh"}, nil, map[string]string{
			"same": "unchanged", "changed": "use --overwrite"}},
		{"overwrite", true, []string{"fresh"}, []fsm.Host{
			{Name: "changed", Host: "10.0.0.2", User: "u", State: fsm.HostInstalled, InstallPath: "/opt/rbee"}},
			map[string]string{"same": "unchanged"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, err := ImportConfigFile("~/.ssh/config", existing, ImportOptions{Home: home, Overwrite: tc.overwrite})
			require.NoError(t, err)
			var added []string
			for _, h := range res.Added {
				added = append(added, h.Name)
			}
			require.Equal(t, tc.added, added)
			require.Equal(t, tc.updated, res.Updated)
			require.Len(t, res.Skipped, len(tc.skipped))
			for _, s := range res.Skipped {
				require.Contains(t, s.Reason, tc.skipped[s.Host.Name], s.Host.Name)
			}
		})
	}
}

func TestImportConfigErrors(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		opts  func(home string) ImportOptions
		want  string
	}{
		{"include loop", map[string]string{"config": "Include config\nHost a\n"}, nil, "deeper than"},
		{"bare Match", map[string]string{"config": "Host a\nMatch\n"}, nil, "criterion"},
		{"relative include without home", map[string]string{"config": "Include x\n"},
			func(string) ImportOptions { return ImportOptions{} }, "needs a home"},
		{"match exec only", map[string]string{"config": "Match exec \"rm -rf /\"\n  User x\nHost ok\n"}, nil, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			home := writeHome(t, tc.files)
			opts := ImportOptions{Home: home}
			if tc.opts != nil {
				opts = tc.opts(home)
			}
			f, err := os.Open(filepath.Join(home, ".ssh", "config"))
			require.NoError(t, err)
			defer f.Close()
			res, err := ImportConfig(f, nil, opts)
			if tc.want == "" {
				require.NoError(t, err)
				require.Len(t, res.Added, 1)
				require.Empty(t, res.Added[0].User, "Match exec is never run nor applied")
				return
			}
			require.ErrorIs(t, err, ErrInvalid)
			require.Contains(t, err.Error(), tc.want)
		})
	}
	_, err := ImportConfigFile(filepath.Join(t.TempDir(), "missing"), nil, ImportOptions{})
	require.ErrorIs(t, err, os.ErrNotExist)
	_, err = ImportConfig(strings.NewReader(strings.Repeat("#", maxConfigBytes+1)), nil, ImportOptions{})
	require.ErrorIs(t, err, ErrInvalid)
}

// TestImportThenDial imports a real sshd from a config (settings split over
// an Include and a wildcard block) and connects to the imported entry.
func TestImportThenDial(t *testing.T) {
	s := startSSHD(t)
	home := writeHome(t, map[string]string{
		"config":    "Include ~/.ssh/hosts/*\n\nHost *.test\n    HostName 127.0.0.1\n    User " + s.user + "\n",
		"hosts/lab": fmt.Sprintf("Host box.test\n    Port %d\n    IdentityFile %s\n", s.port, s.key),
	})
	res, err := ImportConfigFile("", nil, ImportOptions{Home: home})
	require.NoError(t, err)
	require.Len(t, res.Added, 1)
	h := res.Added[0]
	require.Equal(t, fsm.Host{Name: "box.test", Host: "127.0.0.1", Port: s.port, User: s.user, IdentityFile: s.key, State: fsm.HostKnown}, h)

	tg := TargetFromHost(h, filepath.Join(home, ".ssh", "known_hosts"))
	tg.AcceptNew = true
	c, err := Dial(testCtx(t), tg)
	require.NoError(t, err)
	defer c.Close()
	out, err := c.Run(testCtx(t), "echo imported")
	require.NoError(t, err)
	require.Equal(t, "imported\n", out)
}

// TestImportConfigRefusesNonFiles: a FIFO (as the config or an Include)
// or a directory is refused at once; opening a FIFO for reading used to
// wait for a writer for ever, holding the request.
func TestImportConfigRefusesNonFiles(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	require.NoError(t, syscall.Mkfifo(fifo, 0o600))
	cfg := filepath.Join(dir, "config")
	require.NoError(t, os.WriteFile(cfg, []byte("Host a\n  HostName 10.0.0.1\nInclude "+fifo+"\n"), 0o600))
	errs := make(chan error, 3)
	go func() {
		for _, p := range []string{fifo, dir, cfg} {
			_, err := ImportConfigFile(p, nil, ImportOptions{Home: dir})
			errs <- err
		}
	}()
	for _, p := range []string{fifo, dir, cfg} {
		select {
		case err := <-errs:
			require.ErrorIs(t, err, ErrInvalid, p)
			require.ErrorContains(t, err, "not a regular file", p)
		case <-time.After(10 * time.Second):
			t.Fatalf("the import of %s waits on the FIFO", p)
		}
	}
}

// TestImportConfigQuotes: a quoted Include path with a space is one path;
// a quoted Host pattern, a path or a flag is no hive name (warned).
func TestImportConfigQuotes(t *testing.T) {
	home := writeHome(t, map[string]string{
		"config":           "Include \"inc dir/*.conf\"\n\nHost \"spaced alias\" ok1\n  HostName 10.0.0.2\n\nHost \"../../etc\" a/b --flag ok2\n  HostName 10.0.0.3\n",
		"inc dir/one.conf": "Host incl1\n  HostName 10.0.0.4\n",
	})
	res, err := ImportConfigFile("", nil, ImportOptions{Home: home, DefaultUser: "me"})
	require.NoError(t, err)
	var names []string
	for _, h := range res.Added {
		names = append(names, h.Name)
	}
	require.ElementsMatch(t, []string{"incl1", "ok1", "ok2"}, names)
	w := strings.Join(res.Warnings, "\n")
	for _, bad := range []string{"spaced", "alias", "../../etc", "a/b", "--flag"} {
		require.Contains(t, w, bad)
	}
	require.Equal(t, []string{`/a dir/x.conf`, "b", "it's"}, splitWords(`"/a dir/x.conf" b 'it'"'"'s'`))
}

// TestImportConfigHostKeySettings: host key settings rbee does not follow
// are named in a warning, so an admin whose keys live in another
// known_hosts (or under a HostKeyAlias) learns why ssh-test calls the host
// unknown; the strict settings it matches say nothing.
func TestImportConfigHostKeySettings(t *testing.T) {
	cfg := `Host lab1
    UserKnownHostsFile ~/.ssh/known_hosts.lab
Host lab2
    StrictHostKeyChecking no
Host lab3
    HostKeyAlias gpu
Host lab4
    StrictHostKeyChecking yes
Host lab5
    StrictHostKeyChecking ask
`
	res, err := ImportConfig(strings.NewReader(cfg), nil, ImportOptions{DefaultUser: "me"})
	require.NoError(t, err)
	require.Len(t, res.Added, 5)
	w := strings.Join(res.Warnings, "\n")
	require.Len(t, res.Warnings, 3, "%q", res.Warnings)
	require.Contains(t, w, "host lab1: UserKnownHostsFile ~/.ssh/known_hosts.lab is not followed")
	require.Contains(t, w, "host lab2: StrictHostKeyChecking no is not followed")
	require.Contains(t, w, "host lab3: HostKeyAlias gpu is not followed")
}
