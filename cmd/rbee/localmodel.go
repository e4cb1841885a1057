package main

import (
	"io"
	"os"
	"strings"

	"github.com/rbee-project/rbee/model/builtin"
)

// localModel resolves the model argument of the commands that read a GGUF
// file on this machine (model run, tokenize, inspect, bench engine): a
// path, or builtin:NAME, which is written to a temporary file for the
// command's life (the engine maps a file). cleanup removes that file.
func localModel(arg string) (path string, cleanup func(), err error) {
	name, ok := strings.CutPrefix(arg, "builtin:")
	if !ok {
		return arg, func() {}, nil
	}
	r, _, _, err := builtin.Open(name)
	if err != nil {
		return "", nil, err
	}
	defer r.Close()
	f, err := os.CreateTemp("", "rbee-"+name+"-*.gguf")
	if err != nil {
		return "", nil, err
	}
	cleanup = func() { os.Remove(f.Name()) }
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		cleanup()
		return "", nil, err
	}
	if err := f.Close(); err != nil {
		cleanup()
		return "", nil, err
	}
	return f.Name(), cleanup, nil
}
