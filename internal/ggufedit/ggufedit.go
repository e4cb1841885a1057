// Package ggufedit writes edited copies of GGUF models for tests: the
// same tensors, the metadata changed (a value rewritten, a key added),
// such as a real model given a chat template it lacks.
package ggufedit

import (
	"fmt"
	"maps"
	"slices"

	"github.com/rbee-project/rbee/model/gguf"
)

// Write writes to path a copy of src whose metadata values are what value
// returns for each of src's pairs (a nil func keeps them), followed by
// the pairs of add (values as gguf.Writer.AddKV takes them) in the order
// of their keys; the tensors are src's.
func Write(path string, src *gguf.File, value func(gguf.KV) any, add map[string]any) error {
	w := gguf.NewWriter()
	for _, kv := range src.KVs {
		var v any = kv.Value
		if value != nil {
			v = value(kv)
		}
		if err := w.AddKV(kv.Key, v); err != nil {
			return fmt.Errorf("ggufedit: %s: %w", kv.Key, err)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(add)) {
		if err := w.AddKV(k, add[k]); err != nil {
			return fmt.Errorf("ggufedit: %s: %w", k, err)
		}
	}
	for i := range src.Tensors {
		ti := &src.Tensors[i]
		data, err := src.TensorData(ti)
		if err != nil {
			return fmt.Errorf("ggufedit: tensor %s: %w", ti.Name, err)
		}
		if err := w.AddTensor(ti.Name, ti.Type, ti.Dims, data); err != nil {
			return fmt.Errorf("ggufedit: tensor %s: %w", ti.Name, err)
		}
	}
	return w.WriteFile(path)
}
