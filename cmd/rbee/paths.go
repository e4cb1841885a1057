package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/rbee-project/rbee/node/client"
)

// localModelRef is the model reference to send for ref: a relative path
// of a file in the current directory, sent to a node on this machine with
// no hive named, is made absolute (the node resolves a relative path in
// its own working directory, where the file is not); anything else, a
// catalog id, a short name, hf:…, a URL, a path on another hive, is sent
// as it is.
func (g *globals) localModelRef(ref, hive string) string {
	if hive != "" || filepath.IsAbs(ref) || !client.IsLoopbackURL(g.node) {
		return ref
	}
	if st, err := os.Stat(ref); err != nil || !st.Mode().IsRegular() {
		return ref
	}
	if abs, err := filepath.Abs(ref); err == nil {
		return abs
	}
	return ref
}

// localPathAnnotation marks the flags that name a file or directory on
// this machine (not on a hive or an SSH host).
const localPathAnnotation = "rbee_local_path"

// localPaths marks the flags names of f as paths on this machine: a
// leading ~ in their values is the user's home directory (expandHome).
func localPaths(f *pflag.FlagSet, names ...string) {
	for _, n := range names {
		if err := f.SetAnnotation(n, localPathAnnotation, []string{"true"}); err != nil {
			panic(err) // a flag name that does not exist: a programming error
		}
	}
}

// expandHome replaces a leading ~ ("~" or "~/…") in the values of cmd's
// local path flags with the user's home directory. A shell does that for
// a word of its own, but not after --flag=, in quotes, or in an
// environment variable (RBEE_DATA_DIR="~/rbee"), where the ~ would else
// name a directory "~" in the current one.
func expandHome(cmd *cobra.Command) error {
	var err error
	cmd.Flags().VisitAll(func(fl *pflag.Flag) {
		if _, ok := fl.Annotations[localPathAnnotation]; !ok || err != nil {
			return
		}
		v := fl.Value.String()
		if v != "~" && !strings.HasPrefix(v, "~/") {
			return
		}
		home, herr := os.UserHomeDir()
		if herr != nil {
			err = fmt.Errorf("--%s %s: %w", fl.Name, v, herr)
			return
		}
		err = fl.Value.Set(filepath.Join(home, v[1:]))
	})
	return err
}
