package worker

import "errors"

// LoadEngine loads path with rbee's pure-Go engine (model/engine).
// TEMPORARY: the engine has not landed yet.
func LoadEngine(path string, opts LoadOptions) (Model, error) {
	return nil, errors.New("engine not available yet")
}
