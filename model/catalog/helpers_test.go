package catalog

import (
	"bytes"

	"github.com/rbee-project/rbee/model/gguf"
	"github.com/rbee-project/rbee/model/quant"
)

// mixedGGUF is a qwen2 header with Q4_K matrices, one smaller Q6_K matrix
// and F32 norms, like a Q4_K_M file (whose general.file_type is left out).
func mixedGGUF() ([]byte, error) {
	w := gguf.NewWriter()
	for k, v := range map[string]any{"general.architecture": "qwen2", "qwen2.context_length": uint32(32768)} {
		if err := w.AddKV(k, v); err != nil {
			return nil, err
		}
	}
	add := func(name string, typ quant.Type, dims ...uint64) error {
		n := uint64(1)
		for _, d := range dims {
			n *= d
		}
		return w.AddTensor(name, typ, dims, make([]byte, n/uint64(typ.BlockSize())*uint64(typ.BlockBytes())))
	}
	for _, err := range []error{
		add("token_embd.weight", quant.Q4_K, 256, 8),
		add("blk.0.attn_q.weight", quant.Q4_K, 256, 8),
		add("blk.0.ffn_down.weight", quant.Q6_K, 256, 4),
		add("blk.0.attn_norm.weight", quant.F32, 4096), // 1-D: ignored even though large
	} {
		if err != nil {
			return nil, err
		}
	}
	var buf bytes.Buffer
	_, err := w.WriteTo(&buf)
	return buf.Bytes(), err
}
