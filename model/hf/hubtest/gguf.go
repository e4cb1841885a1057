package hubtest

import (
	"bytes"
	"math/rand/v2"

	"github.com/rbee-project/rbee/model/gguf"
	"github.com/rbee-project/rbee/model/quant"
)

// GGUF returns a small but well-formed GGUF file: a "llama"-style header
// (architecture, context length) and three tensors, two 2-D of type typ
// and one 1-D F32 norm, filled with bytes from seed. Different seeds give
// different files (and sha256s). The tensors are not meant for inference.
func GGUF(arch string, ctxLen uint32, typ quant.Type, seed uint64) ([]byte, error) {
	w := gguf.NewWriter()
	if err := w.AddKV("general.architecture", arch); err != nil {
		return nil, err
	}
	if err := w.AddKV("general.name", "hubtest"); err != nil {
		return nil, err
	}
	if err := w.AddKV(arch+".context_length", ctxLen); err != nil {
		return nil, err
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	fill := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	row := uint64(256) // one K-quant super-block, a multiple of every block size
	bs := uint64(typ.BlockSize())
	rowBytes := int(row / bs * uint64(typ.BlockBytes()))
	for _, name := range []string{"token_embd.weight", "blk.0.attn_q.weight"} {
		if err := w.AddTensor(name, typ, []uint64{row, 4}, fill(4*rowBytes)); err != nil {
			return nil, err
		}
	}
	if err := w.AddTensor("output_norm.weight", quant.F32, []uint64{row}, fill(int(row)*4)); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if _, err := w.WriteTo(&buf); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
